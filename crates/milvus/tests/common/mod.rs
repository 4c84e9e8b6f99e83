//! Helpers of the Milvus client tests: the shared server from `SIMCASE_MILVUS` (a test skips
//! with one line when it is unset, and fails under CI), unique collection names dropped on
//! every path, and a private `milvus-server` (from `SIMCASE_MILVUS_SERVER`) on ports of its own
//! that a test may kill and restart.
#![allow(dead_code)]

pub use simcase_milvus::testing::{in_ci, OwnServer};
use simcase_milvus::{Collection, MilvusUrl};

/// `host:port` of the shared server, or `None` after printing why the test skips.
pub fn server(test: &str) -> Option<String> {
    match std::env::var("SIMCASE_MILVUS") {
        Ok(s) if !s.is_empty() => Some(s),
        _ => {
            assert!(!in_ci(), "{test}: SIMCASE_MILVUS is not set under CI");
            eprintln!(
                "skipping {test}: set SIMCASE_MILVUS=HOST:PORT to run it against a Milvus server"
            );
            None
        }
    }
}

/// A collection name no other test or engineer uses.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("milvus_{name}_{}_{nanos}", std::process::id())
}

/// A collection URL, dropped when this goes out of scope.
pub struct Scratch(pub MilvusUrl);

impl Scratch {
    pub fn new(server: &str, name: &str) -> Self {
        Self(MilvusUrl::parse(&format!("milvus://{server}/{}", unique(name))).unwrap())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = Collection::drop_collection(&self.0) {
            eprintln!("could not drop {}: {e:#}", self.0);
        }
    }
}
