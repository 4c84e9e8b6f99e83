//! Decode files and print what simcase sees: `cargo run --release --example decode -- FILE...`
fn main() {
    for p in std::env::args().skip(1) {
        match simcase_imaging::decode_path(std::path::Path::new(&p), &Default::default()) {
            Ok(d) => {
                let v = &d.image.data;
                let mean = v.iter().sum::<f32>() / v.len() as f32;
                let (lo, hi) = v
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
                println!(
                    "{p}: {} {}x{} mean {mean:.4} min {lo:.4} max {hi:.4} first {:?}",
                    d.format.name(),
                    d.image.width,
                    d.image.height,
                    &v[..4.min(v.len())]
                );
            }
            Err(e) => println!("{p}: {e}"),
        }
    }
}
