//! Builds libjpeg-turbo 3.1.0's TurboJPEG library (8-, 12- and 16-bit sample paths, arithmetic
//! coding, no SIMD) from `libjpeg-turbo/src` with the `cc` crate, statically, and copies the
//! published pregenerated bindings. It follows the `turbojpeg-static` target of libjpeg-turbo's
//! CMakeLists.txt: the 12- and 16-bit paths are the same sources compiled again with
//! `BITS_IN_JSAMPLE`, so each width is compiled into its own object folder (the file names
//! collide) and all objects go into one archive (the widths call into each other).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// Sources compiled at every sample width (libjpeg-turbo's `JPEG16_SOURCES`).
const WIDTH16: &[&str] = &[
    "jcapistd", "jccolor", "jcdiffct", "jclossls", "jcmainct", "jcprepct", "jcsample", "jdapistd",
    "jdcolor", "jddiffct", "jdlossls", "jdmainct", "jdpostct", "jdsample", "jutils",
];
/// Added for 8 and 12 bits (the DCT-based paths; `JPEG12_SOURCES`).
const WIDTH12: &[&str] = &[
    "jccoefct", "jcdctmgr", "jdcoefct", "jddctmgr", "jdmerge", "jfdctfst", "jfdctint", "jidctflt",
    "jidctfst", "jidctint", "jidctred", "jquant1", "jquant2",
];
/// 8-bit only: the width-independent parts of the library (`JPEG_SOURCES`, with arithmetic
/// coding) and the TurboJPEG API itself.
const WIDTH8: &[&str] = &[
    "jcapimin", "jchuff", "jcicc", "jcinit", "jclhuff", "jcmarker", "jcmaster", "jcomapi",
    "jcparam", "jcphuff", "jctrans", "jdapimin", "jdatadst", "jdatasrc", "jdhuff", "jdicc",
    "jdinput", "jdlhuff", "jdmarker", "jdmaster", "jdphuff", "jdtrans", "jerror", "jfdctflt",
    "jmemmgr", "jmemnobs", "jpeg_nbits", "jaricom", "jcarith", "jdarith", "turbojpeg", "transupp",
    "jdatadst-tj", "jdatasrc-tj", "rdbmp", "rdppm", "wrbmp", "wrppm",
];
/// The TurboJPEG image I/O helpers compiled again for 12 and 16 bits.
const TJ_IO: &[&str] = &["rdppm", "wrppm"];

fn base(root: &Path, out: &Path, bits: u32) -> cc::Build {
    let mut b = cc::Build::new();
    b.include(root.join("config"))
        .include(root.join("src"))
        .define("BITS_IN_JSAMPLE", bits.to_string().as_str())
        .define("PPM_SUPPORTED", None)
        .out_dir(out)
        .warnings(false);
    if bits == 8 {
        b.define("BMP_SUPPORTED", None);
    }
    b
}

fn add(b: &mut cc::Build, root: &Path, names: &[&str]) {
    for n in names {
        let p = root.join("src").join(format!("{n}.c"));
        println!("cargo:rerun-if-changed={}", p.display());
        b.file(p);
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("libjpeg-turbo");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    let mut objects = Vec::new();
    for bits in [12u32, 16] {
        let dir = out.join(format!("j{bits}"));
        fs::create_dir_all(&dir).expect("object folder");
        let mut b = base(&root, &dir, bits);
        add(&mut b, &root, WIDTH16);
        if bits == 12 {
            add(&mut b, &root, WIDTH12);
        }
        add(&mut b, &root, TJ_IO);
        objects.extend(b.compile_intermediates());
    }

    let mut lib = base(&root, &out, 8);
    add(&mut lib, &root, WIDTH16);
    add(&mut lib, &root, WIDTH12);
    add(&mut lib, &root, WIDTH8);
    for o in &objects {
        lib.object(o);
    }
    lib.compile("turbojpeg");

    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("bindings.rs"),
        out.join("bindings.rs"),
    )
    .expect("copy pregenerated bindings");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=bindings.rs");
    println!("cargo:include={}", root.join("src").display());
}
