//! Milvus's gRPC messages and client stubs, generated — do not edit. Regenerate with
//! `cargo run --release --manifest-path tools/milvus-proto-gen/Cargo.toml -- PROTO_DIR`, where
//! PROTO_DIR is `milvus-proto/proto` of the crates.io crate `milvus-sdk-rust` 3.0.3 (tonic-build
//! 0.13, vendored protoc 3.2.0, client stubs only). The files are newer than the 2.3 server, which
//! protobuf tolerates: fields a server does not know are skipped on both sides.
#![allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]

/// `milvus.proto.common`
pub mod common {
    include!("milvus.proto.common.rs");
}
/// `milvus.proto.schema`
pub mod schema {
    include!("milvus.proto.schema.rs");
}
/// `milvus.proto.msg`
pub mod msg {
    include!("milvus.proto.msg.rs");
}
/// `milvus.proto.rg`
pub mod rg {
    include!("milvus.proto.rg.rs");
}
/// `milvus.proto.feder`
pub mod feder {
    include!("milvus.proto.feder.rs");
}
/// `milvus.proto.milvus`
pub mod milvus {
    include!("milvus.proto.milvus.rs");
}
