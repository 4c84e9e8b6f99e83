//! Builds CharLS (the JPEG-LS codec) from the C++ sources in `charls/` with the `cc` crate and
//! links it statically. This replaces the published crate's cmake build: a fresh machine has a
//! C/C++ compiler but no cmake. The source list and definitions follow CharLS 2.4.5's
//! `src/CMakeLists.txt` for a static library (`CHARLS_STATIC`, `CHARLS_LIBRARY_BUILD`, C++14).

use std::path::Path;

const SOURCES: [&str; 8] = [
    "charls_jpegls_decoder.cpp",
    "charls_jpegls_encoder.cpp",
    "jpegls_error.cpp",
    "jpegls.cpp",
    "jpeg_stream_reader.cpp",
    "jpeg_stream_writer.cpp",
    "validate_spiff_header.cpp",
    "version.cpp",
];

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("charls");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++14")
        .include(root.join("include"))
        .define("CHARLS_STATIC", None)
        .define("CHARLS_LIBRARY_BUILD", None)
        .warnings(false);
    for s in SOURCES {
        let path = root.join("src").join(s);
        println!("cargo:rerun-if-changed={}", path.display());
        build.file(path);
    }
    build.compile("charls");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:include={}", root.join("include").display());
}
