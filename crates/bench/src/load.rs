//! `simcase bench serve` without `--chaos`: HTTP load on a running server, search by id and by
//! upload, N keep-alive connections for a fixed time (the generator is
//! `simcase_server::load`); req/s, p50, p99 and errors as a Markdown table.

use anyhow::{Context, Result};
use simcase_server::{client, load};
use std::path::Path;
use std::time::Duration;

/// Load `addr` for `seconds` per phase with `connections` clients; `upload` is the image the
/// upload phase sends.
pub fn serve(
    addr: &str,
    seconds: u64,
    connections: usize,
    upload: &Path,
    k: usize,
    token: Option<&str>,
) -> Result<()> {
    let mut c = client::Client::new(addr);
    if let Some(t) = token {
        c = c.with_token(t);
    }
    let stats = c.get("/api/stats")?.json()?;
    let items = stats["items"]
        .as_u64()
        .context("no item count in /api/stats")? as usize;
    anyhow::ensure!(items > 0, "the served index is empty");
    let bytes = std::fs::read(upload).with_context(|| format!("reading {}", upload.display()))?;
    let (ty, body) = client::multipart_file("query.png", &bytes);
    let dur = Duration::from_secs(seconds);
    println!(
        "{connections} connections x {seconds} s against http://{addr} ({items} items, model {}, k={k})",
        stats["model"]
    );
    println!("| endpoint | requests | req/s | p50 ms | p99 ms | max ms | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let by_id = move |conn: usize, i: usize| -> load::Request {
        let id = (conn * 7919 + i * 104_729) % items;
        ("GET", format!("/api/search?id={id}&k={k}"), None)
    };
    let by_upload = |_: usize, _: usize| -> load::Request {
        (
            "POST",
            format!("/api/search?k={k}"),
            Some((ty.clone(), body.clone())),
        )
    };
    let phases: [(&str, load::MakeRequest); 2] = [
        ("search by id (GET)", &by_id),
        ("search by upload (POST)", &by_upload),
    ];
    for (name, make) in phases {
        let r = load::run(addr, token, connections, dur, make);
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            r.requests,
            r.per_second(),
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.errors
        );
    }
    let after = c.get("/api/stats")?.json()?;
    println!("embedding batches: {}", after["embedding"]);
    Ok(())
}
