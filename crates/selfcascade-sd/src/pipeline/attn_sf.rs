//! Attn-SF (Jin et al. 2023): entropy-preserving rescaling of self-attention logits.
//!
//! In self-attention only, the usual 1/sqrt(d_head) logit scale is multiplied by
//! s = sqrt(ln N_test / ln N_train), where N_test is the layer's token count at the test size and
//! N_train = N_test · (train pixels / test pixels). Cross-attention is never rescaled.

/// The Attn-SF rule for one generation size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnSf {
    /// Pixels of the model's training size (512² for SD 2.1 base).
    pub train_pixels: f64,
    /// Pixels of the generated image.
    pub test_pixels: f64,
}

impl AttnSf {
    /// The rule for a model trained at `train` pixels generating `test` pixels.
    pub fn new(train_pixels: u128, test_pixels: u128) -> Self {
        Self {
            train_pixels: train_pixels as f64,
            test_pixels: test_pixels as f64,
        }
    }

    /// The multiplier s of a self-attention layer with `tokens` query tokens at the test size.
    /// Layers whose training-size token count would be ≤ 1 (where the log ratio is undefined) keep 1.
    pub fn scale(&self, tokens: usize) -> f64 {
        let n_test = tokens as f64;
        let n_train = n_test * self.train_pixels / self.test_pixels;
        if n_train <= 1.0 || n_test <= 1.0 {
            return 1.0;
        }
        (n_test.ln() / n_train.ln()).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd21_values_from_the_paper_setting() {
        // SD 2.1 base (512²): latent levels 64², 32², 16², 8² at training size.
        let levels = [64usize, 32, 16, 8];
        let check = |test_side: u128, want: [f64; 4]| {
            let rule = AttnSf::new(512 * 512, test_side * test_side);
            for (level, w) in levels.iter().zip(want) {
                let tokens = (level * level) as u128 * (test_side * test_side) / (512 * 512);
                let s = rule.scale(tokens as usize);
                assert!(
                    (s - w).abs() < 5e-5,
                    "{test_side}² level {level}²: {s} vs {w}"
                );
            }
        };
        check(1024, [1.0801, 1.0954, 1.1180, 1.1547]);
        check(2048, [1.1547, 1.1832, 1.2247, 1.2910]);
    }

    #[test]
    fn training_size_is_unscaled() {
        let rule = AttnSf::new(512 * 512, 512 * 512);
        assert_eq!(rule.scale(4096), 1.0);
        assert_eq!(AttnSf::new(512 * 512, 2048 * 2048).scale(1), 1.0);
    }
}
