//! diffusers' `scheduler_config.json`, parsed and checked once.

use super::betas::{self, BetaSchedule};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// What the model's output means (`prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// The noise ε (SD 1.x, SD 2.1 base, SDXL).
    #[default]
    Epsilon,
    /// v = sqrt(ᾱ)·ε − sqrt(1−ᾱ)·x₀ (SD 2.1 768-v).
    VPrediction,
    /// The clean sample x₀.
    Sample,
}

/// How inference timesteps are spread over the training timesteps (`timestep_spacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// `arange(0, N) * (T // N) + steps_offset`, reversed.
    Leading,
    /// `round(arange(T, 0, -T/N)) - 1`.
    Trailing,
    /// `round(linspace(0, T-1, N))`, reversed.
    Linspace,
}

/// DDPM's `variance_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VarianceType {
    /// Posterior variance β̃_t.
    FixedSmall,
    /// Posterior variance, computed through its logarithm.
    FixedSmallLog,
    /// β_t.
    FixedLarge,
}

/// The scheduler classes whose configs are understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    /// `DDIMScheduler` (the paper's sampler).
    Ddim,
    /// `DDPMScheduler` (ancestral sampling; training noise).
    Ddpm,
    /// `EulerDiscreteScheduler` (SDXL's default).
    EulerDiscrete,
}

impl SchedulerKind {
    /// The diffusers class name.
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Ddim => "DDIMScheduler",
            Self::Ddpm => "DDPMScheduler",
            Self::EulerDiscrete => "EulerDiscreteScheduler",
        }
    }
}

impl std::str::FromStr for SchedulerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ddim" | "ddimscheduler" => Ok(Self::Ddim),
            "ddpm" | "ddpmscheduler" => Ok(Self::Ddpm),
            "euler" | "euler-discrete" | "eulerdiscretescheduler" => Ok(Self::EulerDiscrete),
            _ => Err(Error::SchedulerConfig(format!(
                "unknown scheduler `{s}`; expected one of: ddim, ddpm, euler"
            ))),
        }
    }
}

/// Fields of a diffusers scheduler config. Absent fields take the default of the class that is built
/// (diffusers' `from_config` semantics), so most are optional here.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SchedulerConfig {
    /// diffusers class that wrote the file.
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    /// T, the number of training timesteps.
    #[serde(default)]
    pub num_train_timesteps: Option<usize>,
    /// First beta.
    #[serde(default)]
    pub beta_start: Option<f64>,
    /// Last beta.
    #[serde(default)]
    pub beta_end: Option<f64>,
    /// Beta schedule.
    #[serde(default)]
    pub beta_schedule: Option<BetaSchedule>,
    /// Explicit betas, overriding the schedule.
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    /// Clip the predicted x₀ to ±`clip_sample_range`.
    #[serde(default)]
    pub clip_sample: Option<bool>,
    /// Clip range.
    #[serde(default)]
    pub clip_sample_range: Option<f64>,
    /// DDIM: use ᾱ = 1 for the step after the last one (else ᾱ_0).
    #[serde(default)]
    pub set_alpha_to_one: Option<bool>,
    /// Added to "leading" timesteps.
    #[serde(default)]
    pub steps_offset: Option<usize>,
    /// What the model predicts.
    #[serde(default)]
    pub prediction_type: Option<PredictionType>,
    /// Dynamic thresholding (not implemented: must be false).
    #[serde(default)]
    pub thresholding: Option<bool>,
    /// Timestep spacing.
    #[serde(default)]
    pub timestep_spacing: Option<TimestepSpacing>,
    /// Rescale betas to zero terminal SNR.
    #[serde(default)]
    pub rescale_betas_zero_snr: Option<bool>,
    /// DDPM variance type.
    #[serde(default)]
    pub variance_type: Option<VarianceType>,
    /// Euler: sigma interpolation ("linear" only).
    #[serde(default)]
    pub interpolation_type: Option<String>,
    /// Euler: Karras sigmas (not implemented: must be false).
    #[serde(default)]
    pub use_karras_sigmas: Option<bool>,
    /// Euler: exponential sigmas (not implemented: must be false).
    #[serde(default)]
    pub use_exponential_sigmas: Option<bool>,
    /// Euler: beta sigmas (not implemented: must be false).
    #[serde(default)]
    pub use_beta_sigmas: Option<bool>,
    /// Euler: "discrete" timesteps only.
    #[serde(default)]
    pub timestep_type: Option<String>,
    /// Euler: the sigma after the last step, "zero" or "sigma_min".
    #[serde(default)]
    pub final_sigmas_type: Option<String>,
    /// Every other field, checked by [`SchedulerConfig::validate`].
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Fields that never change the maths of the schedulers implemented here.
const HARMLESS_FIELDS: &[&str] = &[
    "_diffusers_version",
    "_use_default_values",
    "skip_prk_steps",
    "sample_max_value",
    "dynamic_thresholding_ratio",
    "sigma_min",
    "sigma_max",
];

impl SchedulerConfig {
    /// Parses a `scheduler_config.json` text.
    pub fn from_json(text: &str) -> Result<Self> {
        let cfg: Self = serde_json::from_str(text)
            .map_err(|e| Error::SchedulerConfig(format!("not a valid scheduler config: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and parses a `scheduler_config.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text).map_err(|e| match e {
            Error::SchedulerConfig(m) => Error::SchedulerConfig(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Rejects fields whose values would change the maths in ways not implemented here.
    pub fn validate(&self) -> Result<()> {
        for (key, value) in &self.extra {
            let inert = value.is_null() || value == &serde_json::Value::Bool(false);
            if !inert && !HARMLESS_FIELDS.contains(&key.as_str()) {
                return Err(Error::SchedulerConfig(format!(
                    "unknown field `{key}` = {value}; selfcascade does not know how it changes the schedule \
                     (remove it or set it to null if it is harmless)"
                )));
            }
        }
        let not_implemented = |name: &str, on: Option<bool>| -> Result<()> {
            if on == Some(true) {
                Err(Error::SchedulerConfig(format!(
                    "`{name}: true` is not implemented; set it to false"
                )))
            } else {
                Ok(())
            }
        };
        not_implemented("thresholding", self.thresholding)?;
        not_implemented("use_karras_sigmas", self.use_karras_sigmas)?;
        not_implemented("use_exponential_sigmas", self.use_exponential_sigmas)?;
        not_implemented("use_beta_sigmas", self.use_beta_sigmas)?;
        if let Some(i) = &self.interpolation_type {
            if i != "linear" {
                return Err(Error::SchedulerConfig(format!(
                    "interpolation_type `{i}` is not implemented; only \"linear\" is"
                )));
            }
        }
        if let Some(t) = &self.timestep_type {
            if t != "discrete" {
                return Err(Error::SchedulerConfig(format!(
                    "timestep_type `{t}` is not implemented; only \"discrete\" is"
                )));
            }
        }
        if let Some(f) = &self.final_sigmas_type {
            if f != "zero" && f != "sigma_min" {
                return Err(Error::SchedulerConfig(format!(
                    "final_sigmas_type `{f}` is unknown; expected \"zero\" or \"sigma_min\""
                )));
            }
        }
        if let Some(r) = self.clip_sample_range {
            if r.is_nan() || r <= 0.0 {
                return Err(Error::SchedulerConfig(format!(
                    "clip_sample_range must be positive, got {r}"
                )));
            }
        }
        Ok(())
    }

    /// The scheduler class named by `_class_name`. Configs of other classes are rejected with the
    /// names of the classes that can be built instead (any of them reads the same fields).
    pub fn kind(&self) -> Result<SchedulerKind> {
        match self.class_name.as_deref() {
            Some("DDIMScheduler") => Ok(SchedulerKind::Ddim),
            Some("DDPMScheduler") => Ok(SchedulerKind::Ddpm),
            Some("EulerDiscreteScheduler") => Ok(SchedulerKind::EulerDiscrete),
            Some(other) => Err(Error::SchedulerConfig(format!(
                "`_class_name` is `{other}`, which selfcascade does not implement; choose a scheduler \
                 explicitly (ddim — the paper's sampler —, ddpm or euler): it will read the same betas"
            ))),
            None => Err(Error::SchedulerConfig(
                "no `_class_name` in the config; choose a scheduler explicitly (ddim, ddpm or euler)".into(),
            )),
        }
    }

    /// T.
    pub fn train_timesteps(&self) -> usize {
        self.num_train_timesteps.unwrap_or(1000)
    }

    /// The prediction type (default ε).
    pub fn prediction(&self) -> PredictionType {
        self.prediction_type.unwrap_or_default()
    }

    /// The betas this config describes (float32, as diffusers computes them).
    pub fn betas(&self) -> Result<Vec<f32>> {
        let t = self.train_timesteps();
        let betas = match &self.trained_betas {
            Some(b) => {
                if b.len() != t {
                    return Err(Error::SchedulerConfig(format!(
                        "trained_betas has {} values but num_train_timesteps is {t}",
                        b.len()
                    )));
                }
                b.iter().map(|v| *v as f32).collect()
            }
            None => betas::betas(
                self.beta_schedule.unwrap_or(BetaSchedule::Linear),
                self.beta_start.unwrap_or(0.0001),
                self.beta_end.unwrap_or(0.02),
                t,
            )?,
        };
        Ok(if self.rescale_betas_zero_snr == Some(true) {
            betas::rescale_zero_terminal_snr(&betas)
        } else {
            betas
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SD21: &str = r#"{"_class_name": "PNDMScheduler", "_diffusers_version": "0.8.0", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": false, "num_train_timesteps": 1000,
        "prediction_type": "epsilon", "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1,
        "trained_betas": null}"#;

    #[test]
    fn sd21_config_parses_but_pndm_needs_an_explicit_choice() {
        let cfg = SchedulerConfig::from_json(SD21).unwrap();
        let err = cfg.kind().unwrap_err().to_string();
        assert!(
            err.contains("PNDMScheduler") && err.contains("ddim"),
            "{err}"
        );
        assert_eq!(cfg.steps_offset, Some(1));
    }

    #[test]
    fn unknown_fields_that_matter_are_errors() {
        let err = SchedulerConfig::from_json(r#"{"_class_name":"DDIMScheduler","foo_scale":2.0}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("foo_scale"), "{err}");
        assert!(
            SchedulerConfig::from_json(r#"{"_class_name":"DDIMScheduler","foo":null}"#).is_ok()
        );
        let err = SchedulerConfig::from_json(r#"{"thresholding":true}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("thresholding"), "{err}");
        assert!(SchedulerConfig::from_json(r#"{"beta_schedule":"cosine"}"#).is_err());
    }

    #[test]
    fn trained_betas_must_match_t() {
        let cfg =
            SchedulerConfig::from_json(r#"{"num_train_timesteps":3,"trained_betas":[0.1,0.2]}"#)
                .unwrap();
        assert!(cfg.betas().is_err());
    }
}
