//! The little dense linear algebra the linear adapters need, in f64: a covariance, Cholesky,
//! the inverse of a lower-triangular factor, and a symmetric eigen-decomposition (cyclic
//! Jacobi) for the small between-class matrix of LDA. Sizes here are an embedding's width
//! (256 to 1,280) and a class count, so plain loops suffice; no LAPACK to link.

/// Row-major square matrix of side `n`.
#[derive(Clone, Debug)]
pub struct Square {
    /// Side.
    pub n: usize,
    /// `n * n` values, row-major.
    pub a: Vec<f64>,
}

impl Square {
    /// Zeros.
    pub fn zeros(n: usize) -> Self {
        Self {
            n,
            a: vec![0.0; n * n],
        }
    }

    /// Element `(i, j)`.
    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.a[i * self.n + j]
    }

    /// Add `w · x xᵀ`.
    pub fn add_outer(&mut self, x: &[f64], w: f64) {
        let n = self.n;
        for i in 0..n {
            let xi = x[i] * w;
            if xi == 0.0 {
                continue;
            }
            for (c, xj) in self.a[i * n..i * n + n].iter_mut().zip(x) {
                *c += xi * xj;
            }
        }
    }

    /// The mean of the diagonal.
    pub fn mean_diag(&self) -> f64 {
        (0..self.n).map(|i| self.at(i, i)).sum::<f64>() / self.n.max(1) as f64
    }

    /// Add `v` to the diagonal.
    pub fn add_diag(&mut self, v: f64) {
        for i in 0..self.n {
            self.a[i * self.n + i] += v;
        }
    }
}

/// `Σ a_i b_i` with four accumulators (the loops below are dominated by this).
fn dot64(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// The lower-triangular `L` with `L Lᵀ = s`; `None` unless `s` is positive definite.
pub fn cholesky(s: &Square) -> Option<Square> {
    let n = s.n;
    let mut l = Square::zeros(n);
    for i in 0..n {
        for j in 0..=i {
            let sum = s.at(i, j) - dot64(&l.a[i * n..i * n + j], &l.a[j * n..j * n + j]);
            if i == j {
                if sum <= 0.0 || !sum.is_finite() {
                    return None;
                }
                l.a[i * n + i] = sum.sqrt();
            } else {
                l.a[i * n + j] = sum / l.a[j * n + j];
            }
        }
    }
    Some(l)
}

/// The inverse of a lower-triangular matrix (itself lower-triangular).
pub fn invert_lower(l: &Square) -> Square {
    let n = l.n;
    // Column c of the inverse by forward substitution, kept as row c of `t` (contiguous).
    let mut t = vec![0f64; n * n];
    for c in 0..n {
        for i in c..n {
            let delta = if i == c { 1.0 } else { 0.0 };
            let sum = delta - dot64(&l.a[i * n + c..i * n + i], &t[c * n + c..c * n + i]);
            t[c * n + i] = sum / l.a[i * n + i];
        }
    }
    let mut inv = Square::zeros(n);
    for c in 0..n {
        for i in c..n {
            inv.a[i * n + c] = t[c * n + i];
        }
    }
    inv
}

/// Eigenvalues and eigenvectors of a symmetric matrix (cyclic Jacobi), sorted by eigenvalue,
/// largest first; `vectors[k]` is the k-th eigenvector.
pub fn symmetric_eigen(s: &Square) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = s.n;
    let mut a = s.a.clone();
    let mut v = Square::zeros(n);
    v.add_diag(1.0);
    let mut v = v.a;
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().max(f64::MIN_POSITIVE);
        if off <= 1e-24 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s_ = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s_ * akq;
                    a[k * n + q] = s_ * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s_ * aqk;
                    a[q * n + k] = s_ * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s_ * vkq;
                    v[k * n + q] = s_ * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let values = order.iter().map(|&i| a[i * n + i]).collect();
    let vectors = order
        .iter()
        .map(|&i| (0..n).map(|k| v[k * n + i]).collect())
        .collect();
    (values, vectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_and_its_inverse_whiten_a_known_matrix() {
        // s = [[4, 2], [2, 3]]: L = [[2, 0], [1, √2]].
        let s = Square {
            n: 2,
            a: vec![4.0, 2.0, 2.0, 3.0],
        };
        let l = cholesky(&s).unwrap();
        let want = [2.0, 0.0, 1.0, 2f64.sqrt()];
        for (x, y) in l.a.iter().zip(want) {
            assert!((x - y).abs() < 1e-12, "{:?}", l.a);
        }
        // L⁻¹ s L⁻ᵀ = I.
        let w = invert_lower(&l);
        for i in 0..2 {
            for j in 0..2 {
                let mut v = 0.0;
                for k in 0..2 {
                    for m in 0..2 {
                        v += w.at(i, k) * s.at(k, m) * w.at(j, m);
                    }
                }
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        assert!(cholesky(&Square {
            n: 2,
            a: vec![1.0, 2.0, 2.0, 1.0]
        })
        .is_none());
    }

    #[test]
    fn jacobi_finds_the_eigen_pairs_of_a_symmetric_matrix() {
        // [[2, 1, 0], [1, 2, 0], [0, 0, 5]]: eigenvalues 5, 3, 1.
        let s = Square {
            n: 3,
            a: vec![2.0, 1.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 5.0],
        };
        let (vals, vecs) = symmetric_eigen(&s);
        for (v, w) in vals.iter().zip([5.0, 3.0, 1.0]) {
            assert!((v - w).abs() < 1e-10, "{vals:?}");
        }
        for (val, vec) in vals.iter().zip(&vecs) {
            for i in 0..3 {
                let sv: f64 = (0..3).map(|j| s.at(i, j) * vec[j]).sum();
                assert!((sv - val * vec[i]).abs() < 1e-9);
            }
        }
    }
}
