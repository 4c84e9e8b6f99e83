//! The peer runtimes (PyTorch, onnxruntime, FAISS) from `tools/bench_peers.py`, run on the same
//! cores in the same run so that the printed ratios compare like with like.

use anyhow::{bail, Context, Result};
use std::process::Command;

/// Which malloc policy the peers run under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerHeap {
    /// simcase's own (`simcase_kernels::heap`), given by `GLIBC_TUNABLES`: both sides reuse
    /// freed blocks alike, so that a ratio compares the computation, not malloc's defaults.
    Same,
    /// glibc's defaults, as a peer runs when nothing is set.
    Default,
}

/// `$SIMCASE_PYTHON` (default `python3`) on `tools/bench_peers.py ARGS`, under `heap`'s malloc
/// policy (an operator's own `GLIBC_TUNABLES` stands), said on stderr.
fn command(args: &[String], heap: PeerHeap) -> Command {
    let python = std::env::var("SIMCASE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tools/bench_peers.py");
    let mut cmd = Command::new(&python);
    cmd.arg(script).args(args);
    let tunables = if heap == PeerHeap::Same && !simcase_kernels::heap::operator_tuned() {
        let t = simcase_kernels::heap::glibc_tunables();
        cmd.env("GLIBC_TUNABLES", &t);
        format!("GLIBC_TUNABLES={t} ")
    } else {
        String::new()
    };
    eprintln!(
        "running peers: {tunables}{python} tools/bench_peers.py {}",
        args.join(" ")
    );
    cmd
}

/// Run `tools/bench_peers.py ARGS` under simcase's malloc policy and parse the JSON object it
/// prints.
pub fn run(args: &[String]) -> Result<serde_json::Value> {
    let out = command(args, PeerHeap::Same)
        .output()
        .context("running the Python peers")?;
    if !out.status.success() {
        bail!(
            "bench_peers.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("bench_peers.py printed something other than JSON")
}

/// `tools/bench_peers.py embed --serve`: the peers loaded once, then one timed pass per
/// request, so that `bench embed` can alternate the peers' passes with its own and both sides
/// see the same minutes of the machine.
pub struct Serving {
    child: std::process::Child,
    /// `None` once closed (in `drop`), which ends the script's loop.
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    peers: Vec<String>,
}

impl Serving {
    /// Starts `tools/bench_peers.py ARGS --serve` under `heap`'s malloc policy and waits for
    /// its list of peers.
    pub fn start(args: &[String], heap: PeerHeap) -> Result<Self> {
        use std::process::Stdio;
        let mut args = args.to_vec();
        args.push("--serve".into());
        let mut child = command(&args, heap)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the Python peers")?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("bench_peers.py: no pipes");
        };
        let mut s = Self {
            child,
            stdin: Some(stdin),
            stdout: std::io::BufReader::new(stdout),
            peers: Vec::new(),
        };
        let hello = s.line()?;
        s.peers = serde_json::from_value(hello["peers"].clone())
            .context("bench_peers.py did not list its peers")?;
        Ok(s)
    }

    /// The peers' names, in report order.
    pub fn peers(&self) -> &[String] {
        &self.peers
    }

    /// img/s of one timed pass of `peer` at `batch` (warmed up on its first request).
    pub fn pass(&mut self, peer: &str, batch: usize) -> Result<f64> {
        use std::io::Write;
        let stdin = self
            .stdin
            .as_mut()
            .context("bench_peers.py: stdin closed")?;
        writeln!(
            stdin,
            "{}",
            serde_json::json!({"peer": peer, "batch": batch})
        )?;
        stdin.flush()?;
        let r = self.line()?;
        r["rate"]
            .as_f64()
            .with_context(|| format!("bench_peers.py answered {r} for {peer} at batch {batch}"))
    }

    /// One JSON line from the script; its exit (a failed import, a crash) is an error.
    fn line(&mut self) -> Result<serde_json::Value> {
        use std::io::BufRead;
        let mut buf = String::new();
        if self.stdout.read_line(&mut buf)? == 0 {
            bail!("bench_peers.py exited (its error is above)");
        }
        serde_json::from_str(&buf)
            .with_context(|| format!("bench_peers.py printed {:?}", buf.trim_end()))
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        // Closing its stdin ends the script's loop, so that it exits normally and removes its
        // temporary folder (the wheels, the int8 graph); killed only if it has not after 10 s.
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
