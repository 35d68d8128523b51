//! Fréchet distance (FID) and kernel distance (KID) between two sets of features, in double precision.
//!
//! - FID: `‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^{1/2}` with unbiased covariances (`np.cov`).
//!   The product of two positive semi-definite matrices has the eigenvalues of the symmetric
//!   `B Σ₂ Bᵀ`, `B = Σ₁^{1/2}`, so `tr (Σ₁Σ₂)^{1/2}` is the sum of the square roots of that matrix's
//!   eigenvalues: two symmetric eigendecompositions (faer) replace scipy's general `sqrtm`, which gives
//!   the same value without its complex round-off.
//! - KID: the unbiased squared MMD with the cubic polynomial kernel `k(x, y) = (x·y / d + 1)³`, averaged
//!   over random subsets of `min(n₁, n₂, 1000)` rows of each set (clean-fid's `kernel_distance`), with
//!   the standard deviation over subsets (torchmetrics' `kid_std`).

use crate::error::{Error, Result};
use faer::{Mat, Side};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A set of `n` feature vectors of dimension `dim`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// `n × dim` values.
    pub data: Vec<f32>,
    /// Number of vectors.
    pub n: usize,
    /// Dimension of each vector.
    pub dim: usize,
}

impl Features {
    /// Wraps `data` (`n × dim`); errors if the sizes disagree or a value is not finite.
    pub fn new(data: Vec<f32>, n: usize, dim: usize) -> Result<Self> {
        if data.len() != n * dim {
            return Err(Error::Input(format!(
                "{} feature values do not form {n} vectors of dimension {dim}",
                data.len()
            )));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::Numeric(format!(
                "feature {} of vector {} is {} (not finite)",
                i % dim.max(1),
                i / dim.max(1),
                data[i]
            )));
        }
        Ok(Self { data, n, dim })
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    fn matrix(&self, rows: &[usize]) -> Mat<f64> {
        Mat::from_fn(rows.len(), self.dim, |i, j| self.row(rows[i])[j] as f64)
    }
}

/// Mean and unbiased covariance of a feature set.
#[derive(Debug, Clone)]
pub struct FeatureStats {
    /// `μ`, length `dim`.
    pub mean: Vec<f64>,
    /// `Σ`, `dim × dim`.
    pub cov: Mat<f64>,
}

impl FeatureStats {
    /// `np.mean(f, axis=0)` and `np.cov(f, rowvar=False)`; needs at least two vectors.
    pub fn of(features: &Features) -> Result<Self> {
        let (n, d) = (features.n, features.dim);
        if n < 2 {
            return Err(Error::Input(format!(
                "a covariance needs at least 2 feature vectors, got {n}"
            )));
        }
        let mut mean = vec![0f64; d];
        for i in 0..n {
            for (m, &v) in mean.iter_mut().zip(features.row(i)) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let centred = Mat::from_fn(n, d, |i, j| features.row(i)[j] as f64 - mean[j]);
        let cov = centred.transpose() * &centred * faer::Scale(1.0 / (n as f64 - 1.0));
        Ok(Self { mean, cov })
    }
}

/// A whitening projection onto the leading principal components of a fitted feature set:
/// `z = diag(1/√λ) Uᵀ (f − μ)` for the `k` largest eigenvalues λ of its covariance. Small sample sets
/// cannot estimate a covariance of many dimensions (16 vectors span at most 15), so FID on a few
/// whitened components is far less biased than on all of them, and KID's cubic kernel sees unit-scale
/// inputs. The projection is fixed by the fitted set, so distances stay comparable between rows.
#[derive(Debug, Clone)]
pub struct Whitening {
    mean: Vec<f64>,
    /// `dim × k`: the eigenvectors scaled by `1/√λ`.
    basis: Mat<f64>,
}

impl Whitening {
    /// Fits the `k` leading components of `features` (needs `n > k` vectors and eigenvalues > 0).
    pub fn fit(features: &Features, k: usize) -> Result<Self> {
        if k == 0 || k > features.dim || features.n <= k {
            return Err(Error::Input(format!(
                "whitening to {k} components needs 1 ≤ k ≤ {} (the dimension) and more than k vectors \
                 (got {})",
                features.dim, features.n
            )));
        }
        let stats = FeatureStats::of(features)?;
        let eig = stats
            .cov
            .self_adjoint_eigen(Side::Lower)
            .map_err(|e| Error::Numeric(format!("eigendecomposition of Σ failed: {e:?}")))?;
        let (u, s) = (eig.U(), eig.S().column_vector());
        let d = features.dim;
        // Eigenvalues come in ascending order: the leading components are the last k columns.
        // A component whose variance is round-off relative to the largest is no direction at all.
        let floor = 1e-12 * s[d - 1].max(0.0);
        let smallest = s[d - k];
        if smallest.is_nan() || smallest <= floor {
            return Err(Error::Numeric(format!(
                "the fitted features have only {} directions of nonzero variance; use fewer than {k} \
                 components",
                (0..d).filter(|&i| s[i] > floor).count()
            )));
        }
        let basis = Mat::from_fn(d, k, |i, j| {
            let c = d - 1 - j;
            u[(i, c)] / s[c].sqrt()
        });
        Ok(Self {
            mean: stats.mean,
            basis,
        })
    }

    /// Number of output components.
    pub fn components(&self) -> usize {
        self.basis.ncols()
    }

    /// `features` projected and whitened (`n × k`).
    pub fn apply(&self, features: &Features) -> Result<Features> {
        let d = self.mean.len();
        if features.dim != d {
            return Err(Error::Input(format!(
                "features of dimension {} given to a whitening fitted on dimension {d}",
                features.dim
            )));
        }
        let centred = Mat::from_fn(features.n, d, |i, j| {
            features.row(i)[j] as f64 - self.mean[j]
        });
        let z = centred * &self.basis;
        let k = self.components();
        let data = (0..features.n)
            .flat_map(|i| (0..k).map(move |j| (i, j)))
            .map(|(i, j)| z[(i, j)] as f32)
            .collect();
        Features::new(data, features.n, k)
    }
}

/// The Fréchet distance between two Gaussians.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    let d = a.mean.len();
    if b.mean.len() != d {
        return Err(Error::Input(format!(
            "feature dimensions differ: {d} and {}",
            b.mean.len()
        )));
    }
    let mean_term: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y).powi(2))
        .sum();
    let trace = |m: &Mat<f64>| (0..d).map(|i| m[(i, i)]).sum::<f64>();
    let eig = a
        .cov
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::Numeric(format!("eigendecomposition of Σ₁ failed: {e:?}")))?;
    let (u, s) = (eig.U(), eig.S().column_vector());
    // B = U diag(√λ): B Bᵀ = Σ₁, and Bᵀ Σ₂ B has the eigenvalues of Σ₁Σ₂.
    let root = Mat::from_fn(d, d, |i, j| u[(i, j)] * s[j].max(0.0).sqrt());
    let inner = root.transpose() * &b.cov * &root;
    let inner = Mat::from_fn(d, d, |i, j| 0.5 * (inner[(i, j)] + inner[(j, i)]));
    let mu = inner
        .self_adjoint_eigenvalues(Side::Lower)
        .map_err(|e| Error::Numeric(format!("eigendecomposition of Σ₁Σ₂ failed: {e:?}")))?;
    let tr_sqrt: f64 = mu.iter().map(|m| m.max(0.0).sqrt()).sum();
    let fid = mean_term + trace(&a.cov) + trace(&b.cov) - 2.0 * tr_sqrt;
    if !fid.is_finite() {
        return Err(Error::Numeric(format!("FID is {fid}")));
    }
    Ok(fid)
}

/// FID between two feature sets.
pub fn fid(a: &Features, b: &Features) -> Result<f64> {
    frechet_distance(&FeatureStats::of(a)?, &FeatureStats::of(b)?)
}

/// Subset sampling of KID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KidOptions {
    /// Number of subsets (clean-fid and torchmetrics: 100).
    pub subsets: usize,
    /// Largest subset size (1000); the size used is `min(n₁, n₂, max_subset_size)`.
    pub max_subset_size: usize,
    /// Seed of the subset draws.
    pub seed: u64,
}

impl Default for KidOptions {
    fn default() -> Self {
        Self {
            subsets: 100,
            max_subset_size: 1000,
            seed: 0,
        }
    }
}

/// KID: the mean over subsets and its standard deviation (population, as torchmetrics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kid {
    /// Mean of the per-subset unbiased MMD².
    pub mean: f64,
    /// Standard deviation over subsets.
    pub std: f64,
}

/// KID between `a` and `b` over random subsets (each drawn without replacement).
pub fn kid(a: &Features, b: &Features, options: KidOptions) -> Result<Kid> {
    let m = a.n.min(b.n).min(options.max_subset_size);
    if m < 2 {
        return Err(Error::Input(format!(
            "KID needs at least 2 feature vectors on each side (got {} and {})",
            a.n, b.n
        )));
    }
    if options.subsets == 0 {
        return Err(Error::Input("KID needs at least one subset".into()));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let subsets: Vec<(Vec<usize>, Vec<usize>)> = (0..options.subsets)
        .map(|_| {
            let x = rand::seq::index::sample(&mut rng, a.n, m).into_vec();
            let y = rand::seq::index::sample(&mut rng, b.n, m).into_vec();
            (x, y)
        })
        .collect();
    kid_on_subsets(a, b, &subsets)
}

/// KID over given subsets: pairs of row indices into `a` and `b`, of one common size.
pub fn kid_on_subsets(
    a: &Features,
    b: &Features,
    subsets: &[(Vec<usize>, Vec<usize>)],
) -> Result<Kid> {
    if a.dim != b.dim {
        return Err(Error::Input(format!(
            "feature dimensions differ: {} and {}",
            a.dim, b.dim
        )));
    }
    if subsets.is_empty() {
        return Err(Error::Input("KID needs at least one subset".into()));
    }
    let d = a.dim as f64;
    let mut values = Vec::with_capacity(subsets.len());
    for (x, y) in subsets {
        let m = x.len();
        if y.len() != m || m < 2 {
            return Err(Error::Input(format!(
                "KID subsets must have one common size of at least 2 (got {m} and {})",
                y.len()
            )));
        }
        if let Some(&i) = x
            .iter()
            .find(|&&i| i >= a.n)
            .or(y.iter().find(|&&i| i >= b.n))
        {
            return Err(Error::Input(format!(
                "KID subset index {i} is out of range"
            )));
        }
        let (xm, ym) = (a.matrix(x), b.matrix(y));
        let kernel_sum = |p: &Mat<f64>, q: &Mat<f64>, skip_diagonal: bool| {
            let g = p * q.transpose();
            let mut s = 0.0;
            for j in 0..m {
                for i in 0..m {
                    if !(skip_diagonal && i == j) {
                        s += (g[(i, j)] / d + 1.0).powi(3);
                    }
                }
            }
            s
        };
        let mf = m as f64;
        let within = (kernel_sum(&xm, &xm, true) + kernel_sum(&ym, &ym, true)) / (mf * (mf - 1.0));
        let across = kernel_sum(&xm, &ym, false) * 2.0 / (mf * mf);
        values.push(within - across);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    Ok(Kid { mean, std })
}

/// FID and KID of a generated set against a reference set (the JSON of `selfcascade eval fid-kid`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FidKid {
    /// Fréchet distance.
    pub fid: f64,
    /// KID (mean over subsets).
    pub kid: f64,
    /// KID's standard deviation over subsets.
    pub kid_std: f64,
    /// Reference images.
    pub n_real: usize,
    /// Generated images.
    pub n_fake: usize,
}

/// FID and KID of `fake` against `real`.
pub fn fid_kid(real: &Features, fake: &Features, kid_options: KidOptions) -> Result<FidKid> {
    let k = kid(real, fake, kid_options)?;
    Ok(FidKid {
        fid: fid(real, fake)?,
        kid: k.mean,
        kid_std: k.std,
        n_real: real.n,
        n_fake: fake.n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(n: usize, dim: usize, seed: u64, shift: f32) -> Features {
        use rand::Rng;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let data = (0..n * dim).map(|_| rng.random::<f32>() + shift).collect();
        Features::new(data, n, dim).unwrap()
    }

    #[test]
    fn whitening_keeps_the_leading_axes_with_unit_covariance() {
        use rand::Rng;
        // Independent uniform coordinates scaled by 2, 1, 3 (variances 4/12, 1/12, 9/12), offset by 5.
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let scale = [2.0f32, 1.0, 3.0];
        let data = (0..3000)
            .map(|i| 5.0 + scale[i % 3] * (rng.random::<f32>() - 0.5))
            .collect();
        let f = Features::new(data, 1000, 3).unwrap();
        let w = Whitening::fit(&f, 2).unwrap();
        let z = w.apply(&f).unwrap();
        assert_eq!((z.n, z.dim, w.components()), (1000, 2, 2));
        let stats = FeatureStats::of(&z).unwrap();
        for i in 0..2 {
            assert!(stats.mean[i].abs() < 1e-5, "mean {i}: {}", stats.mean[i]);
            for j in 0..2 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((stats.cov[(i, j)] - want).abs() < 1e-5, "cov {i},{j}");
            }
        }
        // Component 0 is the widest axis (2), component 1 the next (0): the basis columns point there.
        assert!(w.basis[(2, 0)].abs() > 10.0 * w.basis[(0, 0)].abs().max(w.basis[(1, 0)].abs()));
        assert!(w.basis[(0, 1)].abs() > 10.0 * w.basis[(1, 1)].abs().max(w.basis[(2, 1)].abs()));
        // Errors: too many components, too few vectors, a dimension mismatch, rank deficiency.
        assert!(Whitening::fit(&f, 4).is_err());
        assert!(Whitening::fit(&features(2, 3, 1, 0.0), 2).is_err());
        assert!(w.apply(&features(5, 4, 1, 0.0)).is_err());
        let flat = Features::new((0..30).map(|i| (i % 3) as f32).collect(), 10, 3).unwrap();
        assert!(Whitening::fit(&flat, 1).is_err());
    }

    #[test]
    fn fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift() {
        let a = features(200, 16, 1, 0.0);
        assert!(fid(&a, &a).unwrap().abs() < 1e-9);
        let b = features(200, 16, 2, 0.0);
        let c = features(200, 16, 2, 0.5);
        let (ab, ac) = (fid(&a, &b).unwrap(), fid(&a, &c).unwrap());
        assert!(ab > 0.0 && ac > ab + 16.0 * 0.25 * 0.9, "{ab} {ac}");
    }

    #[test]
    fn fid_of_gaussians_matches_the_closed_form() {
        // Diagonal covariances: FID = Σ (μ₁−μ₂)² + (σ₁ − σ₂)².
        let a = FeatureStats {
            mean: vec![0.0, 1.0],
            cov: Mat::from_fn(2, 2, |i, j| if i == j { [4.0, 9.0][i] } else { 0.0 }),
        };
        let b = FeatureStats {
            mean: vec![1.0, 1.0],
            cov: Mat::from_fn(2, 2, |i, j| if i == j { [1.0, 16.0][i] } else { 0.0 }),
        };
        let want = 1.0 + (2.0f64 - 1.0).powi(2) + (3.0f64 - 4.0).powi(2);
        assert!((frechet_distance(&a, &b).unwrap() - want).abs() < 1e-12);
    }

    #[test]
    fn kid_is_near_zero_for_one_distribution_and_positive_for_two() {
        let a = features(300, 8, 3, 0.0);
        let b = features(300, 8, 4, 0.0);
        let c = features(300, 8, 5, 0.3);
        let opts = KidOptions {
            subsets: 10,
            max_subset_size: 100,
            seed: 0,
        };
        let same = kid(&a, &b, opts).unwrap();
        let diff = kid(&a, &c, opts).unwrap();
        assert!(same.mean.abs() < 3.0 * same.std.max(1e-6), "{same:?}");
        assert!(diff.mean > 10.0 * same.mean.abs(), "{same:?} {diff:?}");
        assert!(diff.std > 0.0);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(Features::new(vec![0.0; 5], 2, 3).is_err());
        assert!(Features::new(vec![f32::NAN; 6], 2, 3).is_err());
        let one = features(1, 4, 0, 0.0);
        let two = features(2, 4, 0, 0.0);
        assert!(fid(&one, &two).is_err());
        assert!(kid(&one, &two, KidOptions::default()).is_err());
        let other_dim = features(3, 5, 0, 0.0);
        assert!(fid(&two, &other_dim).is_err());
    }
}
