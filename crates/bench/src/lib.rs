//! `simcase bench`'s logic, out of the binary so that tests and other front ends can call it:
//! throughput measured side by side with the reference runtimes ([`throughput`], with the
//! Python peers run by [`peers`]), HTTP load on a running server ([`load`]), and the hardening
//! harnesses: hostile requests built from the API's real parameters ([`hostile`]), sent to the
//! router in process ([`fuzz`]) or to a real server process under a time-bounded soak
//! ([`chaos`]); open time and memory of an index of millions of rows ([`open`]). The CLI
//! keeps only the flags.

pub mod adapt;
pub mod chaos;
pub mod fuzz;
pub mod hostile;
pub mod load;
pub mod milvus;
pub mod open;
pub mod peers;
pub mod rss;
pub mod scale;
pub mod synth;
pub mod throughput;
mod wire;
