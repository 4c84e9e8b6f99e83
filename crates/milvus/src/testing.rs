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

/// A free loopback port (the OS's choice).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private Milvus standalone: its own data folder, every port its own, and its own
/// `/run/milvus` (the binary writes its pid file there; a private mount namespace keeps it from
/// overwriting the shared server's). Killed (its whole process group) when dropped.
pub struct OwnServer {
    pub exe: PathBuf,
    pub dir: PathBuf,
    pub port: u16,
    ports: Vec<(String, u16)>,
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
            auth,
            child: None,
        };
        s.launch();
        Some(s)
    }

    /// Start the server process and wait until it answers.
    pub fn launch(&mut self) {
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
        cmd.args(&args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        self.child = Some(cmd.spawn().unwrap());
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let t = Instant::now();
        let url = self.url("ready_probe");
        loop {
            // Any answer, even a refusal of the (absent) credentials, means it is up.
            match Collection::drop_collection(&url) {
                Ok(_) => return,
                Err(e) if format!("{e:#}").contains("refused the credentials") => return,
                Err(_) => {}
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "milvus-server exited ({st}) before answering; log: {}",
                    self.log_tail()
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "milvus-server not ready in 180s; log: {}",
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
