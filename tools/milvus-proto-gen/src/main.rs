//! Generates the Milvus gRPC client code that crates/milvus commits under src/proto/, from the
//! proto files of the crates.io crate `milvus-sdk-rust` 3.0.3 (its `milvus-proto/proto`), with a
//! vendored protoc: client stubs only, no server. Rerun after changing the proto files:
//! `cargo run --release --manifest-path tools/milvus-proto-gen/Cargo.toml -- PROTO_DIR`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: milvus-proto-gen PROTO_DIR (milvus-sdk-rust-3.0.3/milvus-proto/proto)")?,
    );
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../crates/milvus/src/proto");
    std::fs::create_dir_all(&out)?;
    // SAFETY: single-threaded here, before anything reads the environment.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    let entries: Vec<PathBuf> = ["common.proto", "milvus.proto", "schema.proto"]
        .iter()
        .map(|f| proto_dir.join(f))
        .collect();
    tonic_build::configure()
        .build_server(false)
        .build_client(true)
        .out_dir(&out)
        .compile_protos(&entries, &[proto_dir])?;
    println!("wrote {}", out.display());
    Ok(())
}
