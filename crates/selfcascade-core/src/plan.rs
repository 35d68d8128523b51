//! The scale decomposition d_0 < d_1 < … < d_R of a target size.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// An image size in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Size {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

impl Size {
    /// A size of `width` × `height`.
    pub const fn new(width: usize, height: usize) -> Self {
        Self { width, height }
    }

    /// width · height.
    pub fn pixels(&self) -> u128 {
        self.width as u128 * self.height as u128
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

impl std::str::FromStr for Size {
    type Err = Error;
    /// Parses `WxH` (also `W×H` and `W*H`).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Plan(format!(
                "`{s}` is not a size; write WIDTHxHEIGHT, e.g. 1024x1024"
            ))
        };
        let (w, h) = s.split_once(['x', 'X', '×', '*']).ok_or_else(bad)?;
        Ok(Self::new(
            w.trim().parse().map_err(|_| bad())?,
            h.trim().parse().map_err(|_| bad())?,
        ))
    }
}

/// Largest side accepted, in pixels (far above anything a diffusion model can sample).
pub const MAX_SIDE: usize = 1 << 20;

/// The stage sizes of a self-cascade run, smallest first; the last is the target.
///
/// R = ceil(log₄(target pixels / base pixels)) stages follow the base stage (more only for targets so
/// elongated that a side would otherwise more than double between stages). Stage 0 has about the base
/// pixel count at the target's aspect ratio; later stages grow geometrically; each has at most 4× the
/// pixels of the one before (no side more than doubles); every side is a multiple of `align`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScalePlan {
    stages: Vec<Size>,
}

fn round_to(x: f64, align: usize) -> usize {
    ((x / align as f64).round().max(1.0) as usize) * align
}

fn check_side(name: &str, v: usize, align: usize) -> Result<()> {
    if v == 0 {
        return Err(Error::Plan(format!(
            "{name} must be positive, got 0 (use a multiple of {align})"
        )));
    }
    if v > MAX_SIDE {
        return Err(Error::Plan(format!(
            "{name} {v} is larger than the supported maximum {MAX_SIDE}"
        )));
    }
    if !v.is_multiple_of(align) {
        let below = v / align * align;
        let above = below + align;
        let near = if below == 0 {
            format!("{above}")
        } else {
            format!("{below} or {above}")
        };
        return Err(Error::Plan(format!(
            "{name} {v} is not a multiple of {align} (the model's alignment); nearest valid: {near}"
        )));
    }
    Ok(())
}

impl ScalePlan {
    /// Plans the stages from a model's base size to `target`, every side a multiple of `align`.
    pub fn new(base: Size, target: Size, align: usize) -> Result<Self> {
        if align == 0 {
            return Err(Error::Plan(
                "alignment must be positive (64 for Stable Diffusion)".into(),
            ));
        }
        if base.width == 0 || base.height == 0 || base.width > MAX_SIDE || base.height > MAX_SIDE {
            return Err(Error::Plan(format!(
                "base size {base} must have sides in 1..={MAX_SIDE}"
            )));
        }
        check_side("target width", target.width, align)?;
        check_side("target height", target.height, align)?;
        if target.pixels() < base.pixels() {
            return Err(Error::Plan(format!(
                "target {target} has fewer pixels than the model's base size {base}; self-cascade scales up \
                 only (use a target of at least {} pixels, e.g. {base}, or sample directly)",
                base.pixels()
            )));
        }
        let mut r = 0u32;
        while base.pixels() * 4u128.pow(r) < target.pixels() {
            r += 1;
        }
        if r == 0 {
            return Ok(Self {
                stages: vec![target],
            });
        }
        let (tw, th) = (target.width as f64, target.height as f64);
        let bp = base.pixels() as f64;
        // Stage 0: the base pixel count at the target's aspect ratio. A side whose ideal length is below
        // the alignment is held at one alignment unit, and the other side takes the pixel budget.
        let (w_ideal, h_ideal) = ((bp * tw / th).sqrt(), (bp * th / tw).sqrt());
        let (w0, h0) = if w_ideal < align as f64 {
            (align, round_to(bp / align as f64, align))
        } else if h_ideal < align as f64 {
            (round_to(bp / align as f64, align), align)
        } else {
            (round_to(w_ideal, align), round_to(h_ideal, align))
        };
        let (w0, h0) = (w0.min(target.width), h0.min(target.height));
        // Extremely elongated targets need more stages than the pixel ratio says: no side may more than
        // double from one stage to the next.
        let doublings = |from: usize, to: usize| {
            let mut k = 0u32;
            while from << k < to {
                k += 1;
            }
            k
        };
        let r = r
            .max(doublings(w0, target.width))
            .max(doublings(h0, target.height));
        let mut stages: Vec<Size> = (0..=r)
            .map(|i| {
                let f = i as f64 / r as f64;
                let w =
                    round_to(w0 as f64 * (tw / w0 as f64).powf(f), align).clamp(w0, target.width);
                let h =
                    round_to(h0 as f64 * (th / h0 as f64).powf(f), align).clamp(h0, target.height);
                Size::new(w, h)
            })
            .collect();
        stages[r as usize] = target;
        // From the top down: no side may more than double from one stage to the next, none may shrink.
        for i in (0..r as usize).rev() {
            let next = stages[i + 1];
            let half = |v: usize| v.div_ceil(2 * align) * align;
            stages[i].width = stages[i].width.max(half(next.width)).min(next.width);
            stages[i].height = stages[i].height.max(half(next.height)).min(next.height);
        }
        stages.dedup();
        Ok(Self { stages })
    }

    /// A plan with explicit stage sizes, smallest first. Each must have more pixels than the one
    /// before, at most 4× more, and no side may shrink.
    pub fn from_stages(stages: Vec<Size>) -> Result<Self> {
        if stages.is_empty() || stages.iter().any(|s| s.width == 0 || s.height == 0) {
            return Err(Error::Plan(
                "a plan needs at least one stage, with positive sides".into(),
            ));
        }
        for w in stages.windows(2) {
            let (a, b) = (w[0], w[1]);
            if b.pixels() <= a.pixels()
                || b.pixels() > 4 * a.pixels()
                || b.width < a.width
                || b.height < a.height
            {
                return Err(Error::Plan(format!(
                    "stage {b} cannot follow {a}: each stage must grow, by at most 4× the pixels, without shrinking a side"
                )));
            }
        }
        Ok(Self { stages })
    }

    /// A plan with one stage: plain sampling at `size`.
    pub fn single(size: Size) -> Self {
        Self { stages: vec![size] }
    }

    /// The stage sizes, base stage first, target last.
    pub fn stages(&self) -> &[Size] {
        &self.stages
    }

    /// The target size.
    pub fn target(&self) -> Size {
        self.stages[self.stages.len() - 1]
    }

    /// Number of stages (R + 1).
    pub fn len(&self) -> usize {
        self.stages.len()
    }

    /// Always false: a plan has at least one stage.
    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn plan(b: (usize, usize), t: (usize, usize)) -> Vec<(usize, usize)> {
        ScalePlan::new(Size::new(b.0, b.1), Size::new(t.0, t.1), 64)
            .unwrap()
            .stages()
            .iter()
            .map(|s| (s.width, s.height))
            .collect()
    }

    #[test]
    fn paper_settings() {
        assert_eq!(
            plan((512, 512), (1024, 1024)),
            vec![(512, 512), (1024, 1024)]
        );
        assert_eq!(
            plan((512, 512), (2048, 2048)),
            vec![(512, 512), (1024, 1024), (2048, 2048)]
        );
        assert_eq!(
            plan((1024, 1024), (2048, 2048)),
            vec![(1024, 1024), (2048, 2048)]
        );
        assert_eq!(plan((512, 512), (512, 512)), vec![(512, 512)]);
        assert_eq!(
            plan((512, 512), (4096, 4096)),
            vec![(512, 512), (1024, 1024), (2048, 2048), (4096, 4096)]
        );
    }

    #[test]
    fn non_square_targets_keep_aspect() {
        assert_eq!(
            plan((512, 512), (1536, 1024)),
            vec![(640, 448), (960, 704), (1536, 1024)]
        );
        assert_eq!(
            plan((512, 512), (2048, 1152)),
            vec![(704, 384), (1216, 640), (2048, 1152)]
        );
    }

    #[test]
    fn elongated_targets_keep_the_base_pixel_count() {
        // A one-unit-wide target: stage 0 holds the base's pixels, not five times them.
        let p = ScalePlan::new(Size::new(8, 8), Size::new(8, 168), 8).unwrap();
        let s: Vec<_> = p.stages().iter().map(|s| (s.width, s.height)).collect();
        assert_eq!(s[0], (8, 8));
        assert_eq!(*s.last().unwrap(), (8, 168));
        for w in s.windows(2) {
            assert!(w[1].1 <= 2 * w[0].1, "{s:?}");
        }
    }

    #[test]
    fn errors_name_the_fix() {
        let e = ScalePlan::new(Size::new(512, 512), Size::new(1000, 1024), 64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("960 or 1024"), "{e}");
        let e = ScalePlan::new(Size::new(512, 512), Size::new(256, 256), 64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("fewer pixels"), "{e}");
        let e = ScalePlan::new(Size::new(512, 512), Size::new(0, 1024), 64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("positive"), "{e}");
        assert!(ScalePlan::new(Size::new(512, 512), Size::new(1024, 1024), 0).is_err());
        assert!(ScalePlan::new(Size::new(512, 512), Size::new(32, 1024), 64)
            .unwrap_err()
            .to_string()
            .contains("64"));
    }

    #[test]
    fn explicit_stages_are_checked() {
        let ok = ScalePlan::from_stages(vec![Size::new(64, 32), Size::new(128, 64)]).unwrap();
        assert_eq!(ok.len(), 2);
        assert!(ScalePlan::from_stages(vec![]).is_err());
        assert!(ScalePlan::from_stages(vec![Size::new(64, 64), Size::new(256, 256)]).is_err());
        assert!(ScalePlan::from_stages(vec![Size::new(64, 64), Size::new(64, 64)]).is_err());
        assert!(ScalePlan::from_stages(vec![Size::new(64, 64), Size::new(32, 192)]).is_err());
    }

    #[test]
    fn parse_sizes() {
        assert_eq!("1024x768".parse::<Size>().unwrap(), Size::new(1024, 768));
        assert!("1024".parse::<Size>().is_err());
        assert!("ax3".parse::<Size>().is_err());
    }

    proptest! {
        #[test]
        fn plan_invariants(bw in 1usize..32, bh in 1usize..32, tw in 1usize..96, th in 1usize..96, align in prop::sample::select(vec![8usize, 16, 64])) {
            let base = Size::new(bw * align, bh * align);
            let target = Size::new(tw * align, th * align);
            match ScalePlan::new(base, target, align) {
                Err(_) => prop_assert!(target.pixels() < base.pixels()),
                Ok(p) => {
                    let s = p.stages();
                    prop_assert_eq!(*s.last().unwrap(), target);
                    let mut r = 0u32;
                    while base.pixels() * 4u128.pow(r) < target.pixels() { r += 1; }
                    // More stages than the pixel ratio asks for only when one fewer could not reach the
                    // target with sides at most doubling.
                    if s.len() > r as usize + 1 {
                        let reach = 1usize << (s.len() - 2);
                        prop_assert!(s[0].width * reach < target.width || s[0].height * reach < target.height,
                            "{} stages from {}", s.len(), s[0]);
                    }
                    for st in s {
                        prop_assert!(st.width % align == 0 && st.height % align == 0 && st.width > 0 && st.height > 0);
                    }
                    for w in s.windows(2) {
                        prop_assert!(w[1].pixels() > w[0].pixels());
                        prop_assert!(w[1].pixels() <= 4 * w[0].pixels());
                        prop_assert!(w[1].width >= w[0].width && w[1].height >= w[0].height);
                    }
                    // Stage 0 is near the base pixel count unless the target itself is smaller than that
                    // after alignment.
                    if s.len() > 1 {
                        let ratio = s[0].pixels() as f64 / base.pixels() as f64;
                        prop_assert!((0.05..=4.0).contains(&ratio), "stage0 {} base {}", s[0], base);
                    }
                }
            }
        }
    }
}
