//! The client against a real Milvus server: collections made, refused and reopened, rows
//! upserted idempotently, searched, fetched and scanned; filters with hostile values matching
//! exactly the rows holding them; clear one-line errors for an unreachable server, wrong
//! credentials, and a collection of another model; and a server killed (SIGKILL) mid-ingest
//! losing nothing that was reported committed.

mod common;
use common::*;
use simcase_index::{Column, ItemMeta, VectorIndex};
use simcase_milvus::expr::{self, FieldRef, Where};
use simcase_milvus::{item_id, Collection, IndexSpec, MilvusUrl};
use std::time::{Duration, Instant};

const DIM: usize = 8;

/// A unit vector, distinct per `i`.
fn vector(i: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIM)
        .map(|j| ((i * 7 + j * 13) % 17) as f32 + 1.0 + (i as f32) * 0.01 * (j as f32))
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn item(i: usize, modality: &str) -> (ItemMeta, Vec<f32>) {
    let mut m = ItemMeta {
        path: format!("/data/{i}.png"),
        hash: format!("{i:064x}"),
        format: "png".into(),
        modality: Some(modality.into()),
        label: Some(format!("{modality}/chest/normal")),
        ..Default::default()
    };
    m.extra.insert(
        "study_date".into(),
        format!("2020{:02}01", 1 + i % 12).into(),
    );
    (m, vector(i))
}

#[test]
fn collections_store_search_and_refuse_other_models() {
    let Some(server) = server("collections_store_search_and_refuse_other_models") else {
        return;
    };
    let s = Scratch::new(&server, "basic");
    let spec = IndexSpec::Hnsw {
        m: 8,
        ef_construction: 64,
    };
    let c = Collection::create_or_open(&s.0, "test-model", DIM, &spec).unwrap();
    assert_eq!(c.info().index, spec);
    assert_eq!(c.count().unwrap(), 0);
    let rows: Vec<_> = (0..20)
        .map(|i| item(i, if i % 2 == 0 { "CT" } else { "MR" }))
        .collect();
    c.upsert(&rows[..12]).unwrap();
    c.upsert(&rows[8..]).unwrap(); // four again: replaced, not doubled
    assert_eq!(c.count().unwrap(), 20);
    assert_eq!(VectorIndex::len(&c), 20);
    // Its own vector finds each item first.
    for i in [0, 7, 19] {
        let r = c.search(&[&vector(i)], 3, None, Some(32)).unwrap();
        assert_eq!(r[0][0].id, item_id(&rows[i].0.hash));
        assert_eq!(r[0][0].item.meta, rows[i].0);
        assert!((r[0][0].score - 1.0).abs() < 1e-4, "{}", r[0][0].score);
    }
    // A filter, a keep function, and ids by lookup.
    let w = Where {
        fields: vec![(FieldRef::Column(Column::Modality), vec!["mr".into()])],
        ..Default::default()
    };
    let r = c
        .search(&[&vector(0)], 20, w.to_expr().as_deref(), None)
        .unwrap();
    assert_eq!(r[0].len(), 10);
    assert!(r[0]
        .iter()
        .all(|h| h.item.meta.modality.as_deref() == Some("MR")));
    let odd: Vec<u64> = (0..20)
        .filter(|i| i % 2 == 1)
        .map(|i| item_id(&rows[i].0.hash))
        .collect();
    let keep = |id: u64| odd.contains(&id);
    let hits = c.search_ids(&[&vector(0)], 5, Some(&keep)).unwrap();
    assert_eq!(hits[0].len(), 5);
    assert!(hits[0].iter().all(|h| odd.contains(&h.row)));
    assert!(hits[0].windows(2).all(|w| w[0].score >= w[1].score));
    let got = c.get(&[item_id(&rows[3].0.hash), 12345]).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.meta, rows[3].0);
    assert_eq!(got[0].1, rows[3].1);
    // Dates.
    let w = Where {
        date_from: Some(20200301),
        date_to: Some(20200430),
        ..Default::default()
    };
    assert_eq!(
        c.count_where(w.to_expr().as_deref()).unwrap(),
        (0..20).filter(|i| (2..=3).contains(&(i % 12))).count() as u64
    );
    // A scan sees every row once, with its vector.
    let mut seen = Vec::new();
    c.scan(None, true, &mut |page| {
        for (it, v) in page {
            let i = rows.iter().position(|r| r.0.hash == it.meta.hash).unwrap();
            assert_eq!(v.unwrap(), rows[i].1);
            seen.push(i);
        }
        Ok(())
    })
    .unwrap();
    seen.sort();
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    drop(c);
    // Reopened, it keeps its settings; another model or dimension is refused.
    let c = Collection::open(&s.0).unwrap();
    assert_eq!((c.info().model.as_str(), c.info().dim), ("test-model", DIM));
    let e = format!(
        "{:#}",
        Collection::create_or_open(&s.0, "other-model", DIM, &spec)
            .err()
            .unwrap()
    );
    assert!(
        e.contains("holds vectors of model test-model") && e.contains("other-model"),
        "{e}"
    );
    let e = format!(
        "{:#}",
        Collection::create_or_open(&s.0, "test-model", DIM + 1, &spec)
            .err()
            .unwrap()
    );
    assert!(e.contains("8 dims") && e.contains("9 dims"), "{e}");
    assert_eq!(e.lines().count(), 1);
    let absent = s.0.with_collection(&unique("absent")).unwrap();
    let e = format!("{:#}", Collection::open(&absent).err().unwrap());
    assert!(e.contains("no such collection"), "{e}");
}

/// Values that would change an expression's meaning if pasted into it.
const HOSTILE: &[&str] = &[
    "a\" || id > 0 || \"",
    "\\",
    "\"",
    "'",
    "\n",
    "tab\there",
    "ünïcødé 肺",
    "x\"]",
    "\\\"",
    "end\\",
    "' or 1 == 1 or '",
    "\") or (id >= 0",
    "%",
    "plain",
];

#[test]
fn hostile_filter_values_match_exactly_their_rows() {
    let Some(server) = server("hostile_filter_values_match_exactly_their_rows") else {
        return;
    };
    let s = Scratch::new(&server, "hostile");
    let c = Collection::create_or_open(&s.0, "test-model", DIM, &IndexSpec::Flat).unwrap();
    let keys = ["x\"]", "view", "a\\b", "k'\n"];
    let mut rows = Vec::new();
    for (i, v) in HOSTILE.iter().enumerate() {
        let (mut m, x) = item(i, v);
        m.label = Some(v.to_string());
        for k in keys {
            m.extra.insert(k.into(), v.to_string().into());
        }
        rows.push((m, x));
    }
    c.upsert(&rows).unwrap();
    assert_eq!(c.count().unwrap(), HOSTILE.len() as u64);
    for (i, v) in HOSTILE.iter().enumerate() {
        let mut fields = vec![
            FieldRef::Column(Column::Modality),
            FieldRef::Column(Column::Label),
        ];
        fields.extend(keys.iter().map(|k| FieldRef::Extra(k.to_string())));
        for f in fields {
            let w = Where {
                fields: vec![(f.clone(), vec![v.to_string()])],
                ..Default::default()
            };
            let e = w.to_expr().unwrap();
            let mut found = Vec::new();
            c.scan(Some(&e), false, &mut |page| {
                found.extend(page.into_iter().map(|(it, _)| it.meta.hash));
                Ok(())
            })
            .unwrap_or_else(|err| panic!("{e}: {err:#}"));
            assert_eq!(found, vec![rows[i].0.hash.clone()], "{f:?} = {v:?} via {e}");
            let r = c.search(&[&vector(0)], 5, Some(&e), None).unwrap();
            assert_eq!(r[0].len(), 1, "{e}");
        }
    }
    // Excluding ids and values.
    let w = Where {
        exclude_ids: vec![item_id(&rows[0].0.hash)],
        not_in: Some((Column::Label, vec![HOSTILE[1].into(), HOSTILE[2].into()])),
        ..Default::default()
    };
    assert_eq!(
        c.count_where(w.to_expr().as_deref()).unwrap(),
        HOSTILE.len() as u64 - 3
    );
    assert_eq!(expr::string("a\"b"), "\"a\\\"b\"");
}

#[test]
fn an_unreachable_server_is_one_line_within_seconds() {
    // Nothing listens on port 1; a listener that never accepts completes the TCP handshake
    // (the kernel does) and then says nothing, like a stalled server.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stalled = format!("milvus://{}/c", silent.local_addr().unwrap());
    for url in ["milvus://127.0.0.1:1/c", stalled.as_str()] {
        let t = Instant::now();
        let e = format!(
            "{:#}",
            Collection::open(&MilvusUrl::parse_only(url).unwrap())
                .err()
                .unwrap()
        );
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{url}: {:?}",
            t.elapsed()
        );
        assert!(e.starts_with("cannot reach Milvus at "), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

#[test]
fn wrong_credentials_are_refused_without_showing_the_password() {
    let Some(srv) = OwnServer::start("auth", true) else {
        return;
    };
    let base = srv.url(&unique("auth"));
    let good = base.clone().with_credentials("root", "Milvus");
    let c = Collection::create_or_open(&good, "test-model", DIM, &IndexSpec::Flat).unwrap();
    c.upsert(&[item(1, "CT")]).unwrap();
    for url in [
        base.clone().with_credentials("root", "s3cret-wrong"),
        base.clone(),
    ] {
        let e = format!("{:#}", Collection::open(&url).err().unwrap());
        assert!(e.contains("refused the credentials"), "{e}");
        assert!(!e.contains("s3cret-wrong") && !e.contains("Milvus@"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    assert_eq!(Collection::open(&good).unwrap().count().unwrap(), 1);
}

#[test]
fn a_server_killed_mid_ingest_keeps_every_committed_batch() {
    let Some(mut srv) = OwnServer::start("restart", false) else {
        return;
    };
    let url = srv.url(&unique("restart"));
    let rows: Vec<_> = (0..400).map(|i| item(i, "CT")).collect();
    let batches: Vec<&[(ItemMeta, Vec<f32>)]> = rows.chunks(10).collect();
    let c = Collection::create_or_open(&url, "test-model", DIM, &IndexSpec::default()).unwrap();
    // Measured, not asserted: what a SIGKILL keeps of writes acknowledged but never flushed
    // (upserted after the fifth committed batch, just before the kill).
    let unflushed: Vec<_> = (1000..1050).map(|i| item(i, "XR")).collect();
    // Kill the server (SIGKILL, whole process group) from another thread once five batches
    // were reported committed, while the writer keeps going.
    let committed = std::sync::atomic::AtomicUsize::new(0);
    let mut failed_at = None;
    std::thread::scope(|s| {
        let killer = s.spawn(|| {
            while committed.load(std::sync::atomic::Ordering::SeqCst) < 5 {
                std::thread::sleep(Duration::from_millis(5));
            }
            srv.kill();
        });
        for (i, b) in batches.iter().enumerate() {
            match c.upsert(b) {
                Ok(()) => {
                    if i == 4 {
                        c.upsert_unflushed(&unflushed).unwrap();
                    }
                    committed.store(i + 1, std::sync::atomic::Ordering::SeqCst);
                }
                Err(e) => {
                    let e = format!("{e:#}");
                    assert_eq!(e.lines().count(), 1, "{e}");
                    assert!(e.contains("Milvus at 127.0.0.1:"), "{e}");
                    failed_at = Some(i);
                    break;
                }
            }
        }
        killer.join().unwrap();
    });
    drop(c);
    let failed_at = failed_at.expect("the writer saw the server die");
    assert!(failed_at >= 5 && failed_at < batches.len(), "{failed_at}");
    srv.launch();
    let c = Collection::open(&url).unwrap();
    let kept = c.count_where(Some("modality == \"xr\"")).unwrap();
    eprintln!("durability: {kept} of 50 rows upserted without a flush survived the SIGKILL");
    c.scan(Some("modality == \"xr\""), false, &mut |_| Ok(()))
        .unwrap();
    // Every batch reported committed is there.
    let done: Vec<u64> = rows[..failed_at * 10]
        .iter()
        .map(|r| item_id(&r.0.hash))
        .collect();
    let got = c.get(&done).unwrap();
    assert_eq!(got.len(), done.len(), "committed rows lost by the restart");
    // The rest, re-run from the batch that failed: nothing twice.
    for b in &batches[failed_at..] {
        c.upsert(b).unwrap();
    }
    assert_eq!(c.count().unwrap(), rows.len() as u64 + kept);
    let mut n = 0;
    c.scan(Some("modality == \"ct\""), false, &mut |p| {
        n += p.len();
        Ok(())
    })
    .unwrap();
    assert_eq!(n, rows.len());
}
