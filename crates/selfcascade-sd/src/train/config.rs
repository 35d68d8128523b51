//! Hyper-parameters of Algorithm 1 (training the feature upsamplers Φ of the tuned self-cascade).

use crate::error::{Error, Result};
use burn::optim::AdamWConfig;
use serde::{Deserialize, Serialize};

/// How the training timestep t is drawn, uniformly, for each example of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSampling {
    /// The paper's t ~ U{1..K}: every training timestep but the clean one, t ∈ {1, …, K − 1} in the
    /// UNet's 0-based timestep convention (K = `num_train_timesteps`, 1000).
    Paper,
    /// The released code's t ~ U{0..999} (`torch.randint(0, 1000)`): t ∈ {0, …, K − 1}.
    Reference,
    /// t ∈ {min, …, max}, both inclusive, max < K.
    Range {
        /// Smallest timestep drawn.
        min: usize,
        /// Largest timestep drawn.
        max: usize,
    },
}

impl TimestepSampling {
    /// The inclusive bounds for a schedule of `k` training timesteps.
    pub fn bounds(self, k: usize) -> Result<(usize, usize)> {
        let (min, max) = match self {
            Self::Paper => (1, k.saturating_sub(1)),
            Self::Reference => (0, k.saturating_sub(1)),
            Self::Range { min, max } => (min, max),
        };
        if k == 0 || min > max || max >= k {
            return Err(Error::Input(format!(
                "timestep range {min}..={max} is not within the schedule's 0..={} (need min ≤ max < {k})",
                k.saturating_sub(1)
            )));
        }
        Ok((min, max))
    }

    /// Parses `paper`, `reference` or `MIN..=MAX` / `MIN..MAX` (exclusive end) / `MIN-MAX`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::Input(format!(
                "timestep sampling `{s}`: expected `paper` (t ~ U{{1..K}}), `reference` (t ~ U{{0..999}}) \
                 or an inclusive range `MIN..=MAX`"
            ))
        };
        match s.trim() {
            "paper" => return Ok(Self::Paper),
            "reference" => return Ok(Self::Reference),
            _ => {}
        }
        let num = |v: &str| v.trim().parse::<usize>().map_err(|_| bad());
        let (min, max) = if let Some((a, b)) = s.split_once("..=") {
            (num(a)?, num(b)?)
        } else if let Some((a, b)) = s.split_once("..") {
            (num(a)?, num(b)?.checked_sub(1).ok_or_else(bad)?)
        } else if let Some((a, b)) = s.split_once('-') {
            (num(a)?, num(b)?)
        } else {
            return Err(bad());
        };
        Ok(Self::Range { min, max })
    }
}

/// Hyper-parameters of a training run of Φ. Defaults: the paper and the released code (AdamW with
/// PyTorch's defaults, lr 5e-5, weight decay 0.01, caption dropout 10%, batch 4, t ~ U{1..K}).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpsamplerTrainConfig {
    /// Seed of everything random: example order, timesteps, noise, caption dropout.
    pub seed: u64,
    /// Optimizer steps of the whole run (a resumed run continues up to this count).
    pub steps: u64,
    /// Examples per step.
    pub batch_size: usize,
    /// AdamW learning rate (constant).
    pub learning_rate: f64,
    /// AdamW decoupled weight decay (PyTorch's default 0.01).
    pub weight_decay: f64,
    /// AdamW ε (PyTorch's default 1e-8; burn's own default is 1e-5).
    pub epsilon: f64,
    /// AdamW β₁.
    pub beta_1: f64,
    /// AdamW β₂.
    pub beta_2: f64,
    /// How t is drawn.
    pub timesteps: TimestepSampling,
    /// Probability of training an example on the empty caption instead of its own.
    pub caption_dropout: f64,
    /// Write a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Checkpoints kept on disk (the oldest are deleted); at least 1.
    pub keep_checkpoints: usize,
}

impl Default for UpsamplerTrainConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            steps: 4000,
            batch_size: 4,
            learning_rate: 5e-5,
            weight_decay: 0.01,
            epsilon: 1e-8,
            beta_1: 0.9,
            beta_2: 0.999,
            timesteps: TimestepSampling::Paper,
            caption_dropout: 0.1,
            checkpoint_every: 500,
            keep_checkpoints: 2,
        }
    }
}

impl UpsamplerTrainConfig {
    /// Checks every value; the error names the field and what it must be.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Input(format!("training config: {m}")));
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(format!(
                "learning_rate = {} must be positive",
                self.learning_rate
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("weight_decay = {} must be ≥ 0", self.weight_decay));
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return bad(format!("epsilon = {} must be positive", self.epsilon));
        }
        for (name, b) in [("beta_1", self.beta_1), ("beta_2", self.beta_2)] {
            if !(0.0..1.0).contains(&b) {
                return bad(format!("{name} = {b} must lie in [0, 1)"));
            }
        }
        if !(0.0..=1.0).contains(&self.caption_dropout) {
            return bad(format!(
                "caption_dropout = {} must lie in [0, 1]",
                self.caption_dropout
            ));
        }
        if self.keep_checkpoints == 0 {
            return bad("keep_checkpoints must be at least 1".into());
        }
        Ok(())
    }

    /// burn's AdamW with these settings (decoupled weight decay, as PyTorch's `AdamW`).
    pub fn optimizer(&self) -> AdamWConfig {
        AdamWConfig::new()
            .with_beta_1(self.beta_1 as f32)
            .with_beta_2(self.beta_2 as f32)
            .with_epsilon(self.epsilon as f32)
            .with_weight_decay(self.weight_decay as f32)
    }

    /// Whether a run with `self` may continue a checkpoint written with `other`: every setting that
    /// changes the trajectory must agree (the step count and checkpointing may differ).
    pub fn same_trajectory(&self, other: &Self) -> bool {
        let strip = |c: &Self| Self {
            steps: 0,
            checkpoint_every: 0,
            keep_checkpoints: 1,
            ..c.clone()
        };
        strip(self) == strip(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestep_bounds() {
        assert_eq!(TimestepSampling::Paper.bounds(1000).unwrap(), (1, 999));
        assert_eq!(TimestepSampling::Reference.bounds(1000).unwrap(), (0, 999));
        assert!(TimestepSampling::Range { min: 5, max: 1000 }
            .bounds(1000)
            .is_err());
        assert_eq!(
            TimestepSampling::parse("10..=20").unwrap(),
            TimestepSampling::Range { min: 10, max: 20 }
        );
        assert_eq!(
            TimestepSampling::parse("10..20").unwrap(),
            TimestepSampling::Range { min: 10, max: 19 }
        );
        assert!(TimestepSampling::parse("ten").is_err());
    }

    #[test]
    fn defaults_are_pytorch_and_the_paper() {
        let c = UpsamplerTrainConfig::default();
        c.validate().unwrap();
        assert_eq!(
            (c.learning_rate, c.weight_decay, c.epsilon),
            (5e-5, 0.01, 1e-8)
        );
        assert_eq!((c.beta_1, c.beta_2, c.caption_dropout), (0.9, 0.999, 0.1));
        let bad = UpsamplerTrainConfig {
            caption_dropout: 1.5,
            ..c.clone()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("caption_dropout"));
        let longer = UpsamplerTrainConfig {
            steps: 9,
            ..c.clone()
        };
        assert!(c.same_trajectory(&longer));
        let other_lr = UpsamplerTrainConfig {
            learning_rate: 1e-4,
            ..c.clone()
        };
        assert!(!c.same_trajectory(&other_lr));
    }
}
