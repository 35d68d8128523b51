//! Timing shared by the kernel examples.

use std::time::Instant;

/// The best wall time of `repeats` (at least one) runs of `f`, in seconds.
pub fn best(repeats: usize, mut f: impl FnMut()) -> f64 {
    (0..repeats.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}
