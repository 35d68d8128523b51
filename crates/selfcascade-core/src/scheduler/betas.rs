//! Beta schedules and cumulative alphas, computed the way diffusers computes them in float32.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The `beta_schedule` values diffusers accepts for the schedulers implemented here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// `torch.linspace(beta_start, beta_end, T)`.
    Linear,
    /// `torch.linspace(sqrt(beta_start), sqrt(beta_end), T) ** 2` (Stable Diffusion).
    ScaledLinear,
    /// The cosine schedule of Nichol & Dhariwal, betas capped at 0.999.
    SquaredcosCapV2,
}

/// `torch.linspace(start, end, steps, dtype=torch.float32)`, reproduced bit for bit:
/// float32 arithmetic, first half counted from `start`, second half from `end`.
pub fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    match steps {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (end - start) / (steps - 1) as f32;
            let halfway = steps / 2;
            (0..steps)
                .map(|i| {
                    if i < halfway {
                        start + step * i as f32
                    } else {
                        end - step * (steps - i - 1) as f32
                    }
                })
                .collect()
        }
    }
}

/// The betas of a schedule, in float32 as diffusers stores them.
pub fn betas(
    schedule: BetaSchedule,
    beta_start: f64,
    beta_end: f64,
    num_train_timesteps: usize,
) -> Result<Vec<f32>> {
    if num_train_timesteps < 2 {
        return Err(Error::SchedulerConfig(format!(
            "num_train_timesteps must be at least 2, got {num_train_timesteps}"
        )));
    }
    let betas = match schedule {
        BetaSchedule::Linear => {
            linspace_f32(beta_start as f32, beta_end as f32, num_train_timesteps)
        }
        BetaSchedule::ScaledLinear => linspace_f32(
            beta_start.sqrt() as f32,
            beta_end.sqrt() as f32,
            num_train_timesteps,
        )
        .into_iter()
        .map(|b| b * b)
        .collect(),
        BetaSchedule::SquaredcosCapV2 => {
            let alpha_bar = |t: f64| {
                ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
                    .cos()
                    .powi(2)
            };
            (0..num_train_timesteps)
                .map(|i| {
                    let t1 = i as f64 / num_train_timesteps as f64;
                    let t2 = (i + 1) as f64 / num_train_timesteps as f64;
                    (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                })
                .collect()
        }
    };
    if let Some(bad) = betas.iter().find(|b| !(**b > 0.0 && **b < 1.0)) {
        return Err(Error::SchedulerConfig(format!(
            "beta_start = {beta_start} and beta_end = {beta_end} give a beta of {bad}; every beta must lie in (0, 1)"
        )));
    }
    Ok(betas)
}

/// `torch.cumprod(1 - betas)`: float32 values, accumulated in float64 as PyTorch's CPU kernel does.
pub fn alphas_cumprod(betas: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    betas
        .iter()
        .map(|b| {
            acc *= (1.0f32 - b) as f64;
            acc as f32
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr`: shift and scale sqrt(ᾱ) so the last timestep has zero SNR.
pub fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let sqrt_ac: Vec<f32> = alphas_cumprod(betas).iter().map(|a| a.sqrt()).collect();
    let a0 = sqrt_ac[0];
    let at = sqrt_ac[sqrt_ac.len() - 1];
    let scale = a0 / (a0 - at);
    let alphas_bar: Vec<f32> = sqrt_ac
        .iter()
        .map(|s| {
            let v = (s - at) * scale;
            v * v
        })
        .collect();
    let mut out = Vec::with_capacity(betas.len());
    out.push(1.0 - alphas_bar[0]);
    for i in 1..alphas_bar.len() {
        out.push(1.0 - alphas_bar[i] / alphas_bar[i - 1]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_ends_exactly() {
        let v = linspace_f32(0.1, 0.7, 7);
        assert_eq!(v[0], 0.1);
        assert_eq!(v[6], 0.7);
        assert!((v[3] - 0.4).abs() < 1e-7);
    }

    #[test]
    fn scaled_linear_ends_at_beta_end() {
        let b = betas(BetaSchedule::ScaledLinear, 0.00085, 0.012, 1000).unwrap();
        assert!((b[0] - 0.00085).abs() < 1e-9);
        assert!((b[999] - 0.012).abs() < 1e-8);
    }

    #[test]
    fn bad_betas_are_rejected() {
        assert!(betas(BetaSchedule::Linear, 0.5, 1.5, 10).is_err());
        assert!(betas(BetaSchedule::Linear, 0.1, 0.2, 1).is_err());
    }
}
