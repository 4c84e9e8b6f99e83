//! Seeded synthetic vectors for this crate's HNSW tests and its `hnsw_bench` example, in one
//! place so that what the tests assert and what the example measures are the same data: unit
//! vectors clustered like embeddings (class means plus a low-dimensional spread per class plus
//! a little isotropic noise, so neighbourhoods have a low intrinsic dimension, as real
//! embeddings do), or random unit vectors (no neighbourhood structure). Not an API.

/// A seeded generator (splitmix64) with Box–Muller normals.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f32 {
        let (u, v) = (self.unit(), self.unit());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

/// Scale `v` to unit length.
pub fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

/// The shape of a clustered data set.
#[derive(Clone, Copy, Debug)]
pub struct Clustered {
    /// Values per vector.
    pub dim: usize,
    /// Class means.
    pub classes: usize,
    /// Dimension of each class's spread (a random orthonormal-ish basis of unit vectors).
    pub subspace: usize,
    /// Standard deviation of the isotropic noise, per value.
    pub noise: f32,
    /// Standard deviation along each spread direction.
    pub spread: f32,
}

impl Clustered {
    /// What `tests/hnsw.rs` asserts recall on: 64 classes with a 16-d spread, 384-d.
    pub const TESTS: Clustered = Clustered {
        dim: 384,
        classes: 64,
        subspace: 16,
        noise: 0.01,
        spread: 0.2,
    };

    /// What `examples/hnsw_bench.rs` measures by default: 256 classes with an 8-d spread.
    pub const BENCH: Clustered = Clustered {
        dim: 384,
        classes: 256,
        subspace: 8,
        noise: 0.004,
        spread: 0.25,
    };

    /// The same shape in `dim` dimensions.
    pub fn with_dim(self, dim: usize) -> Self {
        Self { dim, ..self }
    }

    /// `n` unit vectors, row-major. The classes are the same for every seed (rows and
    /// queries of one archive); `seed` draws the rows.
    pub fn rows(&self, n: usize, seed: u64) -> Vec<f32> {
        let dim = self.dim;
        let mut rng = Rng(42);
        let unit = |rng: &mut Rng| {
            let mut m: Vec<f32> = (0..dim).map(|_| rng.normal()).collect();
            normalise(&mut m);
            m
        };
        let classes: Vec<(Vec<f32>, Vec<Vec<f32>>)> = (0..self.classes)
            .map(|_| {
                let mean = unit(&mut rng);
                (mean, (0..self.subspace).map(|_| unit(&mut rng)).collect())
            })
            .collect();
        let mut rng = Rng(seed ^ 0xABCD);
        let mut out = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let (m, basis) = &classes[(rng.next_u64() % self.classes as u64) as usize];
            let mut v: Vec<f32> = m.iter().map(|x| x + self.noise * rng.normal()).collect();
            for b in basis {
                let z = self.spread * rng.normal();
                v.iter_mut().zip(b).for_each(|(x, y)| *x += z * y);
            }
            normalise(&mut v);
            out.extend(v);
        }
        out
    }
}

/// `n` random unit vectors of `dim`, row-major.
pub fn random(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed ^ 0xABCD);
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let mut v: Vec<f32> = (0..dim).map(|_| rng.normal()).collect();
        normalise(&mut v);
        out.extend(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_unit_rows_of_shared_classes() {
        let s = Clustered {
            classes: 4,
            ..Clustered::TESTS.with_dim(32)
        };
        let a = s.rows(50, 1);
        assert_eq!(a.len(), 50 * 32);
        assert_eq!(a, s.rows(50, 1), "seeded");
        assert_ne!(a, s.rows(50, 2));
        for v in a.chunks(32) {
            let n: f32 = v.iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-5);
        }
        // Rows lie near their class means: each row's nearest other row (one of its class) is
        // far closer than among random unit vectors (cosine ~ 0 ± 0.18 at 32-d).
        let r = random(50, 32, 1);
        let best = |d: &[f32], i: usize| {
            (0..50)
                .filter(|&j| j != i)
                .map(|j| crate::dot(&d[i * 32..(i + 1) * 32], &d[j * 32..(j + 1) * 32]))
                .fold(f32::MIN, f32::max)
        };
        let near_c: f32 = (0..50).map(|i| best(&a, i)).sum::<f32>() / 50.0;
        let near_r: f32 = (0..50).map(|i| best(&r, i)).sum::<f32>() / 50.0;
        assert!(near_c > near_r + 0.2, "clustered {near_c}, random {near_r}");
    }
}
