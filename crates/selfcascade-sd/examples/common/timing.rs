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

/// The command line's arguments as numbers; `arg(i, default)` reads the i-th or its default.
pub struct NumericArgs(Vec<usize>);

impl NumericArgs {
    /// Parses every argument after the program name.
    pub fn parse() -> Result<Self, std::num::ParseIntError> {
        std::env::args()
            .skip(1)
            .map(|a| a.parse())
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// The `i`-th argument, or `default` when absent.
    pub fn arg(&self, i: usize, default: usize) -> usize {
        self.0.get(i).copied().unwrap_or(default)
    }
}
