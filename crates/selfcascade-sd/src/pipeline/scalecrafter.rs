//! ScaleCrafter (He et al., ICLR 2024) as configured for SD 2.1 base in its public release:
//! re-dilation of chosen 3×3 convolutions for the first `dilate_tau` steps (optionally progressive),
//! and at 2048² noise-damped classifier-free guidance. Dispersed convolution is off in every released
//! config and is not implemented.

use crate::error::{Error, Result};
use burn::tensor::{backend::Backend, Tensor};
use selfcascade_core::Size;

/// Dilation factors of named convolutions (diffusers paths such as `down_blocks.1.resnets.0.conv1`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DilationMap {
    rules: Vec<(String, f64)>,
}

impl DilationMap {
    /// A map from (path prefix, factor) rules; a conv takes the factor of the first rule whose prefix
    /// its path starts with (`down_blocks.1.resnets.` covers every conv1/conv2 of that block).
    pub fn new(rules: &[(&str, f64)]) -> Self {
        Self {
            rules: rules.iter().map(|(p, f)| (p.to_string(), *f)).collect(),
        }
    }

    /// Parses ScaleCrafter's settings format: one `path:factor` per line.
    pub fn parse(text: &str) -> Result<Self> {
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (path, factor) = line.rsplit_once(':').ok_or_else(|| {
                Error::Input(format!(
                    "dilation settings line {}: expected `path:factor`, got `{line}`",
                    i + 1
                ))
            })?;
            let f: f64 = factor.trim().parse().map_err(|_| {
                Error::Input(format!(
                    "dilation settings line {}: `{factor}` is not a number",
                    i + 1
                ))
            })?;
            if !(f >= 1.0 && f.is_finite()) {
                return Err(Error::Input(format!(
                    "dilation settings line {}: factor {f} must be ≥ 1",
                    i + 1
                )));
            }
            rules.push((path.trim().to_string(), f));
        }
        Ok(Self { rules })
    }

    /// The factor of the conv at `path`, if it is dilated.
    pub fn factor(&self, path: &str) -> Option<f64> {
        self.rules
            .iter()
            .find(|(p, _)| path == p || (p.ends_with('.') && path.starts_with(p.as_str())))
            .map(|(_, f)| *f)
    }

    /// Whether no conv is dilated.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// A ScaleCrafter configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleCrafter {
    /// Re-dilation of the main (strong) branch.
    pub dilate: DilationMap,
    /// Steps (by index) during which re-dilation is active: i < dilate_tau.
    pub dilate_tau: usize,
    /// The milder map of the weak branch of noise-damped CFG (`None`: plain CFG).
    pub ndcfg: Option<DilationMap>,
    /// Steps during which noise-damped CFG is active.
    pub ndcfg_tau: usize,
    /// Progressive dilation: d_i = max(ceil(f·(τ − i)/τ), 2).
    pub progressive: bool,
}

/// Which branch a dilation is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Branch {
    /// The main prediction (conditional and unconditional).
    Strong,
    /// The weak unconditional prediction of noise-damped CFG.
    Weak,
}

fn sd21_1024() -> DilationMap {
    DilationMap::new(&[
        ("down_blocks.1.resnets.", 2.0),
        ("down_blocks.1.downsamplers.0.conv", 2.0),
        ("down_blocks.2.resnets.", 2.0),
        ("down_blocks.2.downsamplers.0.conv", 2.0),
        ("down_blocks.3.resnets.", 2.0),
        ("mid_block.resnets.", 2.0),
        ("up_blocks.0.", 2.0),
        ("up_blocks.1.", 2.0),
        ("up_blocks.2.", 2.0),
    ])
}

fn sd21_2048(with_last_up_block: bool) -> DilationMap {
    let mut rules = vec![
        ("down_blocks.2.resnets.", 3.0),
        ("down_blocks.2.downsamplers.0.conv", 4.0),
        ("down_blocks.3.resnets.", 4.0),
        ("mid_block.resnets.", 4.0),
        ("up_blocks.0.", 4.0),
        ("up_blocks.1.", 4.0),
        ("up_blocks.2.", 3.0),
    ];
    if with_last_up_block {
        rules.push(("up_blocks.3.resnets.", 2.0));
    }
    DilationMap::new(&rules)
}

impl ScaleCrafter {
    /// The published SD 2.1 base settings for a target size (1024² and 2048²).
    pub fn sd21(target: Size) -> Result<Self> {
        match (target.width, target.height) {
            (1024, 1024) => Ok(Self { dilate: sd21_1024(), dilate_tau: 20, ndcfg: None, ndcfg_tau: 0, progressive: false }),
            (2048, 2048) => Ok(Self {
                dilate: sd21_2048(true),
                dilate_tau: 37,
                ndcfg: Some(sd21_2048(false)),
                ndcfg_tau: 37,
                progressive: true,
            }),
            (w, h) => Err(Error::Input(format!(
                "ScaleCrafter has published SD 2.1 settings for 1024x1024 and 2048x2048, not {w}x{h}; \
                 pass your own dilation settings for other sizes"
            ))),
        }
    }

    /// ScaleCrafter for a UNet of `levels` resolution levels that has no published settings (e.g. the
    /// shapes model), generating `side_ratio` × the training side in `steps` steps. The rule generalises
    /// the published SD 2.1 1024² map: every 3×3 conv of every level but the highest-resolution one
    /// (down-block ResNets and downsamplers of levels ≥ 1, the mid block, the up blocks of levels ≥ 1 with
    /// their upsamplers) is dilated by the side ratio, for the first 40% of the steps (20 of 50) at
    /// ratios ≤ 2; above 2 for the first 74% (37 of 50) and progressively, as the 2048² setting.
    /// Noise-damped CFG is not used (its weak map differs from the strong one only in SD 2.1's fourth
    /// level). `generic(4, 2.0, 50)` is exactly [`ScaleCrafter::sd21`] at 1024².
    pub fn generic(levels: usize, side_ratio: f64, steps: usize) -> Result<Self> {
        if !(side_ratio.is_finite() && side_ratio >= 1.0) || levels == 0 {
            return Err(Error::Input(format!(
                "ScaleCrafter needs a side ratio ≥ 1 and at least one level, got {side_ratio} and {levels}"
            )));
        }
        let mut rules: Vec<(String, f64)> = Vec::new();
        if side_ratio > 1.0 {
            for level in 1..levels {
                rules.push((format!("down_blocks.{level}.resnets."), side_ratio));
                rules.push((
                    format!("down_blocks.{level}.downsamplers.0.conv"),
                    side_ratio,
                ));
            }
            rules.push(("mid_block.resnets.".into(), side_ratio));
            for up in 0..levels - 1 {
                rules.push((format!("up_blocks.{up}."), side_ratio));
            }
        }
        let rules: Vec<(&str, f64)> = rules.iter().map(|(p, f)| (p.as_str(), *f)).collect();
        let fraction = if side_ratio <= 2.0 { 0.4 } else { 0.74 };
        Ok(Self {
            dilate: DilationMap::new(&rules),
            dilate_tau: (fraction * steps as f64).round() as usize,
            ndcfg: None,
            ndcfg_tau: 0,
            progressive: side_ratio > 2.0,
        })
    }

    /// The dilation factor of the conv at `path` at step `step` of the given branch, or `None` when the
    /// conv runs undilated.
    pub fn dilation(&self, branch: Branch, path: &str, step: usize) -> Option<f64> {
        let (map, tau) = match branch {
            Branch::Strong => (&self.dilate, self.dilate_tau),
            Branch::Weak => (self.ndcfg.as_ref()?, self.ndcfg_tau),
        };
        if step >= tau {
            return None;
        }
        let f = map.factor(path)?;
        Some(if self.progressive {
            progressive(f, step, tau)
        } else {
            f
        })
    }

    /// Whether noise-damped CFG is active at `step`.
    pub fn ndcfg_active(&self, step: usize) -> bool {
        self.ndcfg.is_some() && step < self.ndcfg_tau
    }
}

/// d_i = max(ceil(f·(τ − i)/τ), 2).
pub fn progressive(factor: f64, step: usize, tau: usize) -> f64 {
    let remaining = tau.saturating_sub(step) as f64 / tau.max(1) as f64;
    (factor * remaining).ceil().max(2.0)
}

/// Noise-damped guidance: ε = ε_weak(x, ∅) + w·(ε_strong(x, c) − ε_strong(x, ∅)).
pub fn noise_damped_cfg<B: Backend, const D: usize>(
    weak_uncond: Tensor<B, D>,
    strong_uncond: Tensor<B, D>,
    strong_cond: Tensor<B, D>,
    guidance: f64,
) -> Tensor<B, D> {
    weak_uncond.add(strong_cond.sub(strong_uncond).mul_scalar(guidance))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_of_1024_cover_the_published_convs() {
        let sc = ScaleCrafter::sd21(Size::new(1024, 1024)).unwrap();
        for p in [
            "down_blocks.1.resnets.0.conv1",
            "down_blocks.1.resnets.1.conv2",
            "down_blocks.1.downsamplers.0.conv",
            "down_blocks.2.downsamplers.0.conv",
            "down_blocks.3.resnets.1.conv1",
            "mid_block.resnets.1.conv2",
            "up_blocks.0.upsamplers.0.conv",
            "up_blocks.2.resnets.2.conv1",
        ] {
            assert_eq!(sc.dilation(Branch::Strong, p, 0), Some(2.0), "{p}");
            assert_eq!(sc.dilation(Branch::Strong, p, 19), Some(2.0), "{p}");
            assert_eq!(
                sc.dilation(Branch::Strong, p, 20),
                None,
                "{p}: inactive from dilate_tau on"
            );
        }
        for p in [
            "conv_in",
            "down_blocks.0.resnets.0.conv1",
            "down_blocks.0.downsamplers.0.conv",
            "up_blocks.3.resnets.0.conv1",
            "conv_out",
        ] {
            assert_eq!(sc.dilation(Branch::Strong, p, 0), None, "{p}");
        }
        assert!(!sc.ndcfg_active(0));
        assert_eq!(
            sc.dilation(Branch::Weak, "mid_block.resnets.0.conv1", 0),
            None
        );
    }

    #[test]
    fn generic_rule_reproduces_the_sd21_1024_setting() {
        let generic = ScaleCrafter::generic(4, 2.0, 50).unwrap();
        let published = ScaleCrafter::sd21(Size::new(1024, 1024)).unwrap();
        let paths = [
            "conv_in",
            "down_blocks.0.resnets.0.conv1",
            "down_blocks.0.downsamplers.0.conv",
            "down_blocks.1.resnets.1.conv2",
            "down_blocks.2.downsamplers.0.conv",
            "down_blocks.3.resnets.0.conv1",
            "mid_block.resnets.1.conv1",
            "up_blocks.0.resnets.2.conv2",
            "up_blocks.2.upsamplers.0.conv",
            "up_blocks.3.resnets.0.conv1",
        ];
        for p in paths {
            for step in [0, 19, 20, 49] {
                assert_eq!(
                    generic.dilation(Branch::Strong, p, step),
                    published.dilation(Branch::Strong, p, step),
                    "{p} at step {step}"
                );
            }
        }
        // Three levels at 4× the side (the shapes model at 16× pixels): progressive over 15 of 20 steps.
        let sc = ScaleCrafter::generic(3, 4.0, 20).unwrap();
        assert_eq!(sc.dilate_tau, 15);
        assert_eq!(
            sc.dilation(Branch::Strong, "down_blocks.2.resnets.0.conv1", 0),
            Some(4.0)
        );
        assert_eq!(
            sc.dilation(Branch::Strong, "up_blocks.1.upsamplers.0.conv", 10),
            Some(2.0)
        );
        assert_eq!(
            sc.dilation(Branch::Strong, "up_blocks.2.resnets.0.conv1", 0),
            None
        );
        assert_eq!(
            sc.dilation(Branch::Strong, "mid_block.resnets.0.conv1", 15),
            None
        );
        assert!(ScaleCrafter::generic(3, 0.5, 20).is_err());
        assert!(ScaleCrafter::generic(3, 1.0, 20).unwrap().dilate.is_empty());
    }

    #[test]
    fn maps_of_2048_and_progressive_schedule() {
        let sc = ScaleCrafter::sd21(Size::new(2048, 2048)).unwrap();
        // Step 0: full factors.
        assert_eq!(
            sc.dilation(Branch::Strong, "down_blocks.2.resnets.0.conv1", 0),
            Some(3.0)
        );
        assert_eq!(
            sc.dilation(Branch::Strong, "down_blocks.2.downsamplers.0.conv", 0),
            Some(4.0)
        );
        assert_eq!(
            sc.dilation(Branch::Strong, "up_blocks.1.upsamplers.0.conv", 0),
            Some(4.0)
        );
        assert_eq!(
            sc.dilation(Branch::Strong, "up_blocks.3.resnets.2.conv2", 0),
            Some(2.0)
        );
        assert_eq!(
            sc.dilation(Branch::Strong, "down_blocks.1.resnets.0.conv1", 0),
            None
        );
        // Weak branch: the same map without up_blocks.3.
        assert_eq!(
            sc.dilation(Branch::Weak, "up_blocks.3.resnets.2.conv2", 0),
            None
        );
        assert_eq!(
            sc.dilation(Branch::Weak, "mid_block.resnets.0.conv1", 0),
            Some(4.0)
        );
        // Progressive: f = 4, τ = 37: i = 10 → ceil(4·27/37) = ceil(2.92) = 3; i = 20 → ceil(1.84) = 2.
        assert_eq!(
            sc.dilation(Branch::Strong, "mid_block.resnets.0.conv1", 10),
            Some(3.0)
        );
        assert_eq!(
            sc.dilation(Branch::Strong, "mid_block.resnets.0.conv1", 20),
            Some(2.0)
        );
        // f = 3: i = 12 → ceil(3·25/37) = ceil(2.03) = 3; i = 13 → ceil(1.95) = 2; floor of 2 holds to the end.
        assert_eq!(
            sc.dilation(Branch::Strong, "up_blocks.2.resnets.0.conv1", 12),
            Some(3.0)
        );
        assert_eq!(
            sc.dilation(Branch::Strong, "up_blocks.2.resnets.0.conv1", 13),
            Some(2.0)
        );
        assert_eq!(
            sc.dilation(Branch::Strong, "up_blocks.3.resnets.0.conv1", 36),
            Some(2.0)
        );
        assert_eq!(
            sc.dilation(Branch::Strong, "mid_block.resnets.0.conv1", 37),
            None
        );
        assert!(sc.ndcfg_active(36) && !sc.ndcfg_active(37));
    }

    #[test]
    fn settings_text_parses_and_bad_lines_are_named() {
        let m = DilationMap::parse(
            "down_blocks.1.resnets.0.conv1:2\n\nmid_block.resnets.0.conv2:1.5\n",
        )
        .unwrap();
        assert_eq!(m.factor("down_blocks.1.resnets.0.conv1"), Some(2.0));
        assert_eq!(m.factor("down_blocks.1.resnets.0.conv2"), None);
        assert_eq!(m.factor("mid_block.resnets.0.conv2"), Some(1.5));
        assert!(DilationMap::parse("x:y")
            .unwrap_err()
            .to_string()
            .contains("line 1"));
        assert!(DilationMap::parse("x:0.5").is_err());
        assert!(ScaleCrafter::sd21(Size::new(1536, 1024)).is_err());
    }

    #[test]
    fn noise_damped_guidance_combines_three_predictions() {
        use burn::backend::Flex;
        let dev = Default::default();
        let t = |v: f32| Tensor::<Flex, 1>::from_floats([v], &dev);
        let e = noise_damped_cfg(t(0.5), t(1.0), t(3.0), 7.5)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(e, vec![0.5 + 7.5 * 2.0]);
    }
}
