//! Concurrent installs of one model. Every installer (pip, `--from`, `--hub`) ends in
//! `install::atomic_install`: stage the files, then check for a complete install, clear a stale
//! incomplete folder and rename the staged one into place. Unless that last step is atomic
//! across installers, one can `remove_dir_all` an install that another has just moved into
//! place, under a reader that already has its weights open.

use simcase_models::install::atomic_install;
use simcase_models::InstallOutcome;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A fresh folder for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "simcase-install-race-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What racer `i` installs: its own weights and record, so the winner can be told apart.
fn fill_as(i: usize, tmp: &Path) -> anyhow::Result<()> {
    std::fs::write(
        tmp.join("model.safetensors"),
        format!("weights of racer {i}"),
    )?;
    std::fs::write(tmp.join("install.json"), format!("{{\"racer\": {i}}}"))?;
    Ok(())
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Racers that finish staging at the same instant, each seeing no complete install and so
/// wanting to clear the folder and rename theirs into place: exactly one installs, the others report the install already
/// there, the files in place are the winner's, and once a complete install has appeared a
/// reader never sees it vanish or change.
#[test]
fn racing_installs_never_remove_a_complete_install() {
    const RACERS: usize = 2;
    const ROUNDS: usize = 2000;
    let root = scratch("race");
    for round in 0..ROUNDS {
        let models = root.join(format!("{round}"));
        let dir = models.join("m");
        std::fs::create_dir_all(&models).unwrap();
        let staged = AtomicUsize::new(0);
        let done = AtomicBool::new(false);
        let (outcomes, seen) = std::thread::scope(|s| {
            // The reader: from the first complete install on, the record must stay put.
            let reader = s.spawn(|| {
                let mut first: Option<String> = None;
                let mut changes = Vec::new();
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let now = std::fs::read_to_string(dir.join("install.json")).ok();
                    match (&first, now) {
                        (None, Some(r)) => first = Some(r),
                        (Some(f), now) if now.as_ref() != Some(f) => changes.push(now),
                        _ => {}
                    }
                    if finished {
                        return (first, changes);
                    }
                    std::thread::yield_now();
                }
            });
            let racers: Vec<_> = (0..RACERS)
                .map(|i| {
                    let (dir, staged) = (&dir, &staged);
                    s.spawn(move || {
                        atomic_install(dir, |tmp| {
                            fill_as(i, tmp)?;
                            // Spin, not sleep: the racers leave together.
                            staged.fetch_add(1, Ordering::AcqRel);
                            while staged.load(Ordering::Acquire) < RACERS {
                                std::hint::spin_loop();
                            }
                            Ok(())
                        })
                        .map(|o| (i, o))
                    })
                })
                .collect();
            // Joined before any check, so a failing racer cannot leave the reader spinning.
            let results: Vec<_> = racers.into_iter().map(|h| h.join()).collect();
            done.store(true, Ordering::Release);
            (results, reader.join().unwrap())
        });
        let outcomes: Vec<(usize, InstallOutcome)> = outcomes
            .into_iter()
            .map(|r| {
                r.expect("racer panicked")
                    .unwrap_or_else(|e| panic!("round {round}: an install failed: {e:#}"))
            })
            .collect();
        let winners: Vec<usize> = outcomes
            .iter()
            .filter(|(_, o)| matches!(o, InstallOutcome::Installed(_)))
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: more or fewer than one installer won: {outcomes:?}"
        );
        for (_, o) in &outcomes {
            let (InstallOutcome::Installed(d) | InstallOutcome::AlreadyInstalled(d)) = o;
            assert_eq!(d, &dir);
        }
        let record = format!("{{\"racer\": {}}}", winners[0]);
        let (first, changes) = seen;
        assert_eq!(
            changes,
            Vec::<Option<String>>::new(),
            "round {round}: a complete install ({first:?}) was removed or replaced"
        );
        assert_eq!(first.as_deref(), Some(record.as_str()), "round {round}");
        assert_eq!(
            std::fs::read_to_string(dir.join("install.json")).unwrap(),
            record
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("model.safetensors")).unwrap(),
            format!("weights of racer {}", winners[0])
        );
        // No staging folder is left behind: only the install and its lock.
        assert_eq!(names(&models), [".m.lock", "m"], "round {round}");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

/// Without a race: a complete install is kept as it is (its files are not even rewritten), a
/// failed fill leaves nothing behind and keeps its error, and a stale incomplete folder is
/// replaced.
#[test]
fn installs_keep_complete_folders_and_clear_failed_ones() {
    let models = scratch("single");
    let dir = models.join("m");

    let err = atomic_install(&dir, |tmp| {
        std::fs::write(tmp.join("model.safetensors"), "half")?;
        anyhow::bail!("conversion failed")
    })
    .unwrap_err();
    assert_eq!(err.to_string(), "conversion failed");
    assert!(!dir.exists());
    assert!(
        names(&models).is_empty(),
        "a failed install left {:?}",
        names(&models)
    );

    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.safetensors"), "stale").unwrap();
    let out = atomic_install(&dir, |tmp| fill_as(1, tmp)).unwrap();
    assert_eq!(out, InstallOutcome::Installed(dir.clone()));
    assert_eq!(
        std::fs::read_to_string(dir.join("install.json")).unwrap(),
        "{\"racer\": 1}"
    );

    let mut called = false;
    let out = atomic_install(&dir, |tmp| {
        called = true;
        fill_as(2, tmp)
    })
    .unwrap();
    assert_eq!(out, InstallOutcome::AlreadyInstalled(dir.clone()));
    assert!(!called, "a complete install was staged again");
    assert_eq!(
        std::fs::read_to_string(dir.join("model.safetensors")).unwrap(),
        "weights of racer 1"
    );
    std::fs::remove_dir_all(&models).unwrap();
}
