//! Exponential moving average of the model weights.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor};

struct Flatten<B: Backend> {
    out: Vec<Tensor<B, 1>>,
}

impl<B: Backend> ModuleVisitor<B> for Flatten<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let n = t.shape().num_elements();
        self.out.push(t.reshape([n]));
    }
}

struct Blend<B: Backend> {
    current: std::vec::IntoIter<Tensor<B, 1>>,
    decay: f64,
}

impl<B: Backend> ModuleMapper<B> for Blend<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, ema, mapper) = param.consume();
        let value = match self.current.next() {
            Some(cur) => {
                let cur = cur.reshape(ema.shape());
                ema.mul_scalar(self.decay)
                    .add(cur.mul_scalar(1.0 - self.decay))
            }
            // Unreachable for two models of the same architecture (same visiting order).
            None => ema,
        };
        Param::from_mapped_value(id, value, mapper)
    }
}

/// EMA of a module's float parameters: `ema ← d·ema + (1 − d)·θ` after every update, with the usual
/// warm-up `d = min(decay, (1 + n) / (10 + n))` for the n-th update so that early averages are not
/// dominated by the random initialisation.
#[derive(Debug, Clone)]
pub struct Ema<M> {
    model: M,
    decay: f64,
    updates: u64,
}

impl<M> Ema<M> {
    /// Starts the average at `model` with target decay `decay` in `[0, 1]` (clamped).
    pub fn new(model: M, decay: f64) -> Self {
        Self {
            model,
            decay: decay.clamp(0.0, 1.0),
            updates: 0,
        }
    }

    /// The averaged model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// Consumes the average, returning the averaged model.
    pub fn into_model(self) -> M {
        self.model
    }

    /// Updates applied so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The decay the next update uses.
    pub fn current_decay(&self) -> f64 {
        let n = self.updates as f64;
        self.decay.min((1.0 + n) / (10.0 + n))
    }

    /// Blends `current` (same architecture) into the average.
    pub fn update<B: Backend>(&mut self, current: &M)
    where
        M: Module<B>,
    {
        let mut flat = Flatten { out: Vec::new() };
        current.visit(&mut flat);
        let mut blend = Blend {
            current: flat.out.into_iter(),
            decay: self.current_decay(),
        };
        self.model = self.model.clone().map(&mut blend);
        self.updates += 1;
    }
}
