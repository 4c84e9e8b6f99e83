//! Test support shared by this crate's tests and the CLI's: a private `milvus-server` (from
//! `SIMCASE_MILVUS_SERVER`) on ports of its own, that a test may SIGKILL and restart. Not part
//! of the API.
#![allow(missing_docs, clippy::missing_panics_doc)]

use crate::{Collection, MilvusUrl};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Under CI a missing server fails the test instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Whether any TCP socket (listening, connected or in TIME_WAIT) has local port `port`.
fn port_in_use(port: u16) -> bool {
    let hex = format!(":{port:04X} ");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(1))
                .any(|local| format!("{local} ").ends_with(&hex))
        })
    })
}

/// A free loopback port (the OS's choice).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One own server at a time in a test process (they share etcd's fixed ports): taken by
/// [`OwnServer::start`], given back when the server is dropped. A plain flag and condition
/// variable rather than a `MutexGuard`, so the server can move between threads.
struct Turn;

static BUSY: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
static FREED: std::sync::Condvar = std::sync::Condvar::new();

impl Turn {
    fn take() -> Self {
        // A test that panicked while holding the lock poisons it; the next may still go.
        let mut busy = BUSY.lock().unwrap_or_else(|e| e.into_inner());
        while *busy {
            busy = FREED.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        *busy = true;
        Turn
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        *BUSY.lock().unwrap_or_else(|e| e.into_inner()) = false;
        FREED.notify_one();
    }
}

/// A private Milvus standalone: its own data folder, every port its own, and its own
/// `/run/milvus` (the binary writes its pid file there; a private mount namespace keeps it from
/// overwriting the shared server's). Killed (its whole process group) when dropped.
pub struct OwnServer {
    pub exe: PathBuf,
    pub dir: PathBuf,
    pub port: u16,
    ports: Vec<(String, u16)>,
    /// Held while this server lives: one own server at a time per test process.
    _turn: Turn,
    auth: bool,
    child: Option<Child>,
}

impl OwnServer {
    /// `None` (after saying why) when `SIMCASE_MILVUS_SERVER` is unset.
    pub fn start(test: &str, auth: bool) -> Option<Self> {
        let exe = match std::env::var_os("SIMCASE_MILVUS_SERVER") {
            Some(e) if !e.is_empty() => PathBuf::from(e),
            _ => {
                assert!(
                    !in_ci(),
                    "{test}: SIMCASE_MILVUS_SERVER is not set under CI"
                );
                eprintln!("skipping {test}: set SIMCASE_MILVUS_SERVER=/path/to/milvus-server to let it start its own server");
                return None;
            }
        };
        let turn = Turn::take();
        let dir =
            std::env::temp_dir().join(format!("simcase-milvus-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("run")).unwrap();
        let mut ports = Vec::new();
        for name in [
            "proxy-port",
            "proxy-internal-port",
            "etcd-port",
            "root-coord-port",
            "query-coord-port",
            "query-node-port",
            "index-coord-port",
            "index-node-port",
            "data-coord-port",
            "data-node-port",
        ] {
            ports.push((name.to_string(), free_port()));
        }
        let port = ports[0].1;
        let mut s = Self {
            exe,
            dir,
            port,
            ports,
            _turn: turn,
            auth,
            child: None,
        };
        s.launch();
        Some(s)
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none());
        let mut args: Vec<String> =
            vec!["--data".into(), self.dir.join("data").display().to_string()];
        for (k, v) in &self.ports {
            args.push(format!("--{k}"));
            args.push(v.to_string());
        }
        if self.auth {
            args.push("--authorization-enabled".into());
            args.push("true".into());
        }
        // The metrics/healthz port (9091) is not a flag: milvus-server takes the first free
        // port from 9091 up, so it never collides with the shared server's.
        let script = r#"run="$1"; shift; mount --bind "$run" /run/milvus 2>/dev/null || mount --bind "$run" /tmp/milvus 2>/dev/null; exec "$@""#;
        let log = std::fs::File::create(self.dir.join("server.log")).unwrap();
        let mut cmd = if Path::new("/usr/bin/unshare").exists() {
            let mut c = Command::new("unshare");
            c.args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
                .arg(self.dir.join("run"))
                .arg(&self.exe);
            c
        } else {
            Command::new(&self.exe)
        };
        // The embedded etcd listens on 2379 and 2380 whatever `--etcd-port` says. An etcd
        // config of its own (`ETCD_CONFIG_PATH`) moves them, but a server started so does not
        // come back after a SIGKILL, which is what these servers are for. So they keep etcd's
        // ports, one at a time in a process ([`OwnServer::start`] holds a lock), and the
        // shared server is the one moved off them (`.ci/run`).
        cmd.args(&args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        self.child = Some(cmd.spawn().unwrap());
    }

    /// Start the server process and wait until it answers. Right after a kill its ports may
    /// still be in TIME_WAIT, which milvus-server's own bind check refuses (it is retried) or,
    /// for a port it resolves itself (the proxy's), silently moves past to the next free one,
    /// where no client would look: so first wait until no socket holds any of them. After a
    /// SIGKILL the relaunched server answers only once the killed one's etcd sessions expire
    /// (their 30 s TTL): until then its coordinators refuse calls with "node not match".
    pub fn launch(&mut self) {
        let t = Instant::now();
        while self.ports.iter().any(|(_, p)| port_in_use(*p)) {
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "ports of the killed milvus-server still in use after 180 s"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        loop {
            self.spawn();
            match self.wait_ready() {
                Ok(()) => return,
                Err(log)
                    if log.contains("bind failed") && t.elapsed() < Duration::from_secs(180) =>
                {
                    self.child = None;
                    std::thread::sleep(Duration::from_secs(3));
                }
                Err(log) => panic!("milvus-server exited before answering; log: {log}"),
            }
        }
    }

    /// `Err(log tail)` when the server process exited first.
    fn wait_ready(&mut self) -> Result<(), String> {
        let t = Instant::now();
        let url = self.url("ready_probe");
        let mut last: String;
        loop {
            // Any answer, even a refusal of the (absent) credentials, means it is up.
            match Collection::drop_collection(&url) {
                Ok(_) => return Ok(()),
                Err(e) if format!("{e:#}").contains("refused the credentials") => return Ok(()),
                Err(e) => last = format!("{e:#}"),
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("({st}) {}", self.log_tail()));
            }
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "milvus-server not ready in 180s ({last}); log: {}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        s.lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn url(&self, collection: &str) -> MilvusUrl {
        MilvusUrl::parse_only(&format!("milvus://127.0.0.1:{}/{collection}", self.port)).unwrap()
    }

    /// SIGKILL the whole server (wrapper, server binary, embedded etcd) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pgid = c.id() as i32;
            // SAFETY: plain syscall on a process group this test created (process_group(0)).
            unsafe {
                libc_kill(-pgid, 9);
            }
            let _ = c.wait();
            // Let the group's last members go before a restart reuses the ports.
            let t = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && t.elapsed() < Duration::from_secs(20)
            {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
