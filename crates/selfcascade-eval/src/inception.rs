//! The FID Inception-v3 (the 2015-12-05 TensorFlow graph as pytorch-fid ports it), up to the 2048-d
//! pool3 features, with pytorch-fid's parameter names (`Mixed_6b.branch7x7dbl_3.conv.weight`) so its
//! published `pt_inception-2015-12-05-6726825d.pth` loads directly.
//!
//! Differences from torchvision's Inception-v3 that the FID variant keeps (pytorch-fid's `FIDInception*`
//! blocks): the average-pool branches of blocks A, C and E₁ exclude the zero padding from the mean
//! (`count_include_pad=False`, as TensorFlow), and the last block's pool branch is a 3×3 max pool. Every
//! convolution is followed by batch norm (ε = 0.001, running statistics) and ReLU; the batch norm is
//! folded into the convolution's weight and bias at load time.

use crate::error::{Error, Result};
use burn::module::{Module, Param};
use burn::tensor::{
    activation::relu,
    backend::Backend,
    module::{adaptive_avg_pool2d, avg_pool2d, conv2d, max_pool2d},
    ops::ConvOptions,
    Tensor,
};
use selfcascade_sd::load::{Init, TensorStore, Vb, Weights};
use std::path::Path;

/// Side of the square input image.
pub const INPUT_SIZE: usize = 299;
/// Length of the pool3 feature vector.
pub const FEATURE_DIM: usize = 2048;
const BN_EPS: f64 = 1e-3;

/// `BasicConv2d`: convolution without bias, batch norm, ReLU — stored with the norm folded in.
#[derive(Module, Debug)]
struct BasicConv2d<B: Backend> {
    weight: Param<Tensor<B, 4>>,
    bias: Param<Tensor<B, 1>>,
    stride: usize,
    pad_h: usize,
    pad_w: usize,
}

impl<B: Backend> BasicConv2d<B> {
    fn new(
        vb: &Vb<B>,
        cin: usize,
        cout: usize,
        kernel: (usize, usize),
        stride: usize,
        padding: (usize, usize),
    ) -> Result<Self> {
        let fan_in = (cin * kernel.0 * kernel.1) as f64;
        let conv = vb.pp("conv");
        let weight = conv.tensor(
            "weight",
            [cout, cin, kernel.0, kernel.1],
            Init::Normal((2.0 / fan_in).sqrt()),
        )?;
        let bn = vb.pp("bn");
        let gamma = bn.tensor("weight", [cout], Init::Ones)?;
        let beta = bn.tensor("bias", [cout], Init::Zeros)?;
        let mean = bn.tensor("running_mean", [cout], Init::Zeros)?;
        let var = bn.tensor("running_var", [cout], Init::Ones)?;
        bn.ignore("num_batches_tracked");
        // y = γ (conv(x) − μ) / √(σ² + ε) + β  =  conv_{w·s}(x) + (β − μ s),  s = γ / √(σ² + ε).
        let scale = gamma.div(var.add_scalar(BN_EPS).sqrt());
        let bias = beta.sub(mean.mul(scale.clone()));
        let weight = weight.mul(scale.reshape([cout, 1, 1, 1]));
        Ok(Self {
            weight: Param::from_tensor(weight),
            bias: Param::from_tensor(bias),
            stride,
            pad_h: padding.0,
            pad_w: padding.1,
        })
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let options = ConvOptions::new(
            [self.stride, self.stride],
            [self.pad_h, self.pad_w],
            [1, 1],
            1,
        );
        relu(conv2d(x, self.weight.val(), Some(self.bias.val()), options))
    }
}

/// A 1×1 convolution.
fn conv1<B: Backend>(vb: &Vb<B>, name: &str, cin: usize, cout: usize) -> Result<BasicConv2d<B>> {
    BasicConv2d::new(&vb.pp(name), cin, cout, (1, 1), 1, (0, 0))
}

/// A `k×k` convolution with "same" padding.
fn conv_same<B: Backend>(
    vb: &Vb<B>,
    name: &str,
    cin: usize,
    cout: usize,
    kernel: (usize, usize),
) -> Result<BasicConv2d<B>> {
    BasicConv2d::new(
        &vb.pp(name),
        cin,
        cout,
        kernel,
        1,
        (kernel.0 / 2, kernel.1 / 2),
    )
}

/// A 3×3 convolution of stride 2 without padding (the grid reductions).
fn conv3_s2<B: Backend>(vb: &Vb<B>, name: &str, cin: usize, cout: usize) -> Result<BasicConv2d<B>> {
    BasicConv2d::new(&vb.pp(name), cin, cout, (3, 3), 2, (0, 0))
}

/// 3×3 average pool, stride 1, padding 1, padding excluded from the mean (TensorFlow's).
fn avg_pool_3x3<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    avg_pool2d(x, [3, 3], [1, 1], [1, 1], false, false)
}

/// 3×3 max pool of stride 2 without padding.
fn max_pool_3x3_s2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    max_pool2d(x, [3, 3], [2, 2], [0, 0], [1, 1], false)
}

fn named<'a, B: Backend>(
    convs: &[(&str, &'a BasicConv2d<B>)],
) -> Vec<(String, &'a BasicConv2d<B>)> {
    convs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

/// The names of a block's convolutions under the block's name.
fn prefixed<'a, B: Backend>(
    block: &str,
    convs: Vec<(String, &'a BasicConv2d<B>)>,
) -> Vec<(String, &'a BasicConv2d<B>)> {
    convs
        .into_iter()
        .map(|(n, c)| (format!("{block}.{n}"), c))
        .collect()
}

/// `prefix_1`, `prefix_2`, … for a chain of convolutions.
fn numbered<'a, B: Backend>(
    prefix: &str,
    convs: &'a [BasicConv2d<B>],
) -> Vec<(String, &'a BasicConv2d<B>)> {
    convs
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("{prefix}_{}", i + 1), c))
        .collect()
}

/// `FIDInceptionA` (Mixed_5b–5d): 1×1, 5×5, double 3×3 and pool branches.
#[derive(Module, Debug)]
struct InceptionA<B: Backend> {
    branch1x1: BasicConv2d<B>,
    branch5x5_1: BasicConv2d<B>,
    branch5x5_2: BasicConv2d<B>,
    branch3x3dbl_1: BasicConv2d<B>,
    branch3x3dbl_2: BasicConv2d<B>,
    branch3x3dbl_3: BasicConv2d<B>,
    branch_pool: BasicConv2d<B>,
}

impl<B: Backend> InceptionA<B> {
    fn convs(&self) -> Vec<(String, &BasicConv2d<B>)> {
        named(&[
            ("branch1x1", &self.branch1x1),
            ("branch5x5_1", &self.branch5x5_1),
            ("branch5x5_2", &self.branch5x5_2),
            ("branch3x3dbl_1", &self.branch3x3dbl_1),
            ("branch3x3dbl_2", &self.branch3x3dbl_2),
            ("branch3x3dbl_3", &self.branch3x3dbl_3),
            ("branch_pool", &self.branch_pool),
        ])
    }

    fn new(vb: &Vb<B>, cin: usize, pool_features: usize) -> Result<Self> {
        Ok(Self {
            branch1x1: conv1(vb, "branch1x1", cin, 64)?,
            branch5x5_1: conv1(vb, "branch5x5_1", cin, 48)?,
            branch5x5_2: conv_same(vb, "branch5x5_2", 48, 64, (5, 5))?,
            branch3x3dbl_1: conv1(vb, "branch3x3dbl_1", cin, 64)?,
            branch3x3dbl_2: conv_same(vb, "branch3x3dbl_2", 64, 96, (3, 3))?,
            branch3x3dbl_3: conv_same(vb, "branch3x3dbl_3", 96, 96, (3, 3))?,
            branch_pool: conv1(vb, "branch_pool", cin, pool_features)?,
        })
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b5 = self
            .branch5x5_2
            .forward(self.branch5x5_1.forward(x.clone()));
        let b3 = self.branch3x3dbl_3.forward(
            self.branch3x3dbl_2
                .forward(self.branch3x3dbl_1.forward(x.clone())),
        );
        let bp = self.branch_pool.forward(avg_pool_3x3(x));
        Tensor::cat(vec![b1, b5, b3, bp], 1)
    }
}

/// `InceptionB` (Mixed_6a): grid reduction 35 → 17.
#[derive(Module, Debug)]
struct InceptionB<B: Backend> {
    branch3x3: BasicConv2d<B>,
    branch3x3dbl_1: BasicConv2d<B>,
    branch3x3dbl_2: BasicConv2d<B>,
    branch3x3dbl_3: BasicConv2d<B>,
}

impl<B: Backend> InceptionB<B> {
    fn convs(&self) -> Vec<(String, &BasicConv2d<B>)> {
        named(&[
            ("branch3x3", &self.branch3x3),
            ("branch3x3dbl_1", &self.branch3x3dbl_1),
            ("branch3x3dbl_2", &self.branch3x3dbl_2),
            ("branch3x3dbl_3", &self.branch3x3dbl_3),
        ])
    }

    fn new(vb: &Vb<B>, cin: usize) -> Result<Self> {
        Ok(Self {
            branch3x3: conv3_s2(vb, "branch3x3", cin, 384)?,
            branch3x3dbl_1: conv1(vb, "branch3x3dbl_1", cin, 64)?,
            branch3x3dbl_2: conv_same(vb, "branch3x3dbl_2", 64, 96, (3, 3))?,
            branch3x3dbl_3: conv3_s2(vb, "branch3x3dbl_3", 96, 96)?,
        })
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b3 = self.branch3x3.forward(x.clone());
        let bd = self.branch3x3dbl_3.forward(
            self.branch3x3dbl_2
                .forward(self.branch3x3dbl_1.forward(x.clone())),
        );
        Tensor::cat(vec![b3, bd, max_pool_3x3_s2(x)], 1)
    }
}

/// `FIDInceptionC` (Mixed_6b–6e): factorised 7×7 branches.
#[derive(Module, Debug)]
struct InceptionC<B: Backend> {
    branch1x1: BasicConv2d<B>,
    branch7x7: Vec<BasicConv2d<B>>,
    branch7x7dbl: Vec<BasicConv2d<B>>,
    branch_pool: BasicConv2d<B>,
}

impl<B: Backend> InceptionC<B> {
    fn convs(&self) -> Vec<(String, &BasicConv2d<B>)> {
        let mut v = named(&[("branch1x1", &self.branch1x1)]);
        v.extend(numbered("branch7x7", &self.branch7x7));
        v.extend(numbered("branch7x7dbl", &self.branch7x7dbl));
        v.push(("branch_pool".into(), &self.branch_pool));
        v
    }

    fn new(vb: &Vb<B>, cin: usize, c7: usize) -> Result<Self> {
        let (row, col) = ((1, 7), (7, 1));
        Ok(Self {
            branch1x1: conv1(vb, "branch1x1", cin, 192)?,
            branch7x7: vec![
                conv1(vb, "branch7x7_1", cin, c7)?,
                conv_same(vb, "branch7x7_2", c7, c7, row)?,
                conv_same(vb, "branch7x7_3", c7, 192, col)?,
            ],
            branch7x7dbl: vec![
                conv1(vb, "branch7x7dbl_1", cin, c7)?,
                conv_same(vb, "branch7x7dbl_2", c7, c7, col)?,
                conv_same(vb, "branch7x7dbl_3", c7, c7, row)?,
                conv_same(vb, "branch7x7dbl_4", c7, c7, col)?,
                conv_same(vb, "branch7x7dbl_5", c7, 192, row)?,
            ],
            branch_pool: conv1(vb, "branch_pool", cin, 192)?,
        })
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let chain =
            |convs: &[BasicConv2d<B>], x: Tensor<B, 4>| convs.iter().fold(x, |x, c| c.forward(x));
        let b1 = self.branch1x1.forward(x.clone());
        let b7 = chain(&self.branch7x7, x.clone());
        let bd = chain(&self.branch7x7dbl, x.clone());
        let bp = self.branch_pool.forward(avg_pool_3x3(x));
        Tensor::cat(vec![b1, b7, bd, bp], 1)
    }
}

/// `InceptionD` (Mixed_7a): grid reduction 17 → 8.
#[derive(Module, Debug)]
struct InceptionD<B: Backend> {
    branch3x3_1: BasicConv2d<B>,
    branch3x3_2: BasicConv2d<B>,
    branch7x7x3: Vec<BasicConv2d<B>>,
}

impl<B: Backend> InceptionD<B> {
    fn convs(&self) -> Vec<(String, &BasicConv2d<B>)> {
        let mut v = named(&[
            ("branch3x3_1", &self.branch3x3_1),
            ("branch3x3_2", &self.branch3x3_2),
        ]);
        v.extend(numbered("branch7x7x3", &self.branch7x7x3));
        v
    }

    fn new(vb: &Vb<B>, cin: usize) -> Result<Self> {
        Ok(Self {
            branch3x3_1: conv1(vb, "branch3x3_1", cin, 192)?,
            branch3x3_2: conv3_s2(vb, "branch3x3_2", 192, 320)?,
            branch7x7x3: vec![
                conv1(vb, "branch7x7x3_1", cin, 192)?,
                conv_same(vb, "branch7x7x3_2", 192, 192, (1, 7))?,
                conv_same(vb, "branch7x7x3_3", 192, 192, (7, 1))?,
                conv3_s2(vb, "branch7x7x3_4", 192, 192)?,
            ],
        })
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b3 = self
            .branch3x3_2
            .forward(self.branch3x3_1.forward(x.clone()));
        let b7 = self.branch7x7x3.iter().fold(x.clone(), |x, c| c.forward(x));
        Tensor::cat(vec![b3, b7, max_pool_3x3_s2(x)], 1)
    }
}

/// `FIDInceptionE_1` / `FIDInceptionE_2` (Mixed_7b, 7c): expanded 3×3 branches.
#[derive(Module, Debug)]
struct InceptionE<B: Backend> {
    branch1x1: BasicConv2d<B>,
    branch3x3_1: BasicConv2d<B>,
    branch3x3_2a: BasicConv2d<B>,
    branch3x3_2b: BasicConv2d<B>,
    branch3x3dbl_1: BasicConv2d<B>,
    branch3x3dbl_2: BasicConv2d<B>,
    branch3x3dbl_3a: BasicConv2d<B>,
    branch3x3dbl_3b: BasicConv2d<B>,
    branch_pool: BasicConv2d<B>,
    /// E₂ pools by maximum, E₁ by average (padding excluded).
    max_pool: bool,
}

impl<B: Backend> InceptionE<B> {
    fn convs(&self) -> Vec<(String, &BasicConv2d<B>)> {
        named(&[
            ("branch1x1", &self.branch1x1),
            ("branch3x3_1", &self.branch3x3_1),
            ("branch3x3_2a", &self.branch3x3_2a),
            ("branch3x3_2b", &self.branch3x3_2b),
            ("branch3x3dbl_1", &self.branch3x3dbl_1),
            ("branch3x3dbl_2", &self.branch3x3dbl_2),
            ("branch3x3dbl_3a", &self.branch3x3dbl_3a),
            ("branch3x3dbl_3b", &self.branch3x3dbl_3b),
            ("branch_pool", &self.branch_pool),
        ])
    }

    fn new(vb: &Vb<B>, cin: usize, max_pool: bool) -> Result<Self> {
        Ok(Self {
            branch1x1: conv1(vb, "branch1x1", cin, 320)?,
            branch3x3_1: conv1(vb, "branch3x3_1", cin, 384)?,
            branch3x3_2a: conv_same(vb, "branch3x3_2a", 384, 384, (1, 3))?,
            branch3x3_2b: conv_same(vb, "branch3x3_2b", 384, 384, (3, 1))?,
            branch3x3dbl_1: conv1(vb, "branch3x3dbl_1", cin, 448)?,
            branch3x3dbl_2: conv_same(vb, "branch3x3dbl_2", 448, 384, (3, 3))?,
            branch3x3dbl_3a: conv_same(vb, "branch3x3dbl_3a", 384, 384, (1, 3))?,
            branch3x3dbl_3b: conv_same(vb, "branch3x3dbl_3b", 384, 384, (3, 1))?,
            branch_pool: conv1(vb, "branch_pool", cin, 192)?,
            max_pool,
        })
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b3 = self.branch3x3_1.forward(x.clone());
        let b3 = Tensor::cat(
            vec![
                self.branch3x3_2a.forward(b3.clone()),
                self.branch3x3_2b.forward(b3),
            ],
            1,
        );
        let bd = self
            .branch3x3dbl_2
            .forward(self.branch3x3dbl_1.forward(x.clone()));
        let bd = Tensor::cat(
            vec![
                self.branch3x3dbl_3a.forward(bd.clone()),
                self.branch3x3dbl_3b.forward(bd),
            ],
            1,
        );
        let pooled = if self.max_pool {
            max_pool2d(x, [3, 3], [1, 1], [1, 1], [1, 1], false)
        } else {
            avg_pool_3x3(x)
        };
        let bp = self.branch_pool.forward(pooled);
        Tensor::cat(vec![b1, b3, bd, bp], 1)
    }
}

/// The FID Inception-v3 up to its 2048-d average-pooled features.
#[derive(Module, Debug)]
pub struct InceptionV3<B: Backend> {
    stem: Vec<BasicConv2d<B>>,
    mixed_5: Vec<InceptionA<B>>,
    mixed_6a: InceptionB<B>,
    mixed_6: Vec<InceptionC<B>>,
    mixed_7a: InceptionD<B>,
    mixed_7b: InceptionE<B>,
    mixed_7c: InceptionE<B>,
}

impl<B: Backend> InceptionV3<B> {
    /// Loads pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (or any state dict with its names and
    /// shapes, `.pth` or `.safetensors`). The 1008-way classifier (`fc.*`) is not used; any other
    /// tensor that the network does not take is an error.
    pub fn load(path: &Path, device: &B::Device) -> Result<Self> {
        let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
        let store = if is_safetensors {
            TensorStore::open(&[path.to_path_buf()])?
        } else {
            TensorStore::open_pth(path, None)?
        };
        Self::from_store(store, device).map_err(|e| match e {
            Error::Model(selfcascade_sd::Error::Weights(inner)) => Error::Input(format!(
                "{}: not the FID Inception-v3 weights ({inner}); expected pytorch-fid's \
                 pt_inception-2015-12-05-6726825d.pth",
                path.display()
            )),
            other => other,
        })
    }

    /// Builds the network from the tensors of `store` (strict: every tensor but `fc.*` must be used).
    pub fn from_store(store: TensorStore, device: &B::Device) -> Result<Self> {
        let weights = Weights::from_store(store);
        let net = Self::build(&weights.root(device))?;
        weights.finish()?;
        Ok(net)
    }

    /// A network with seeded random weights (He-normal convolutions, identity batch norms): for
    /// timing and tests only, its features mean nothing.
    pub fn random(seed: u64, device: &B::Device) -> Result<Self> {
        Self::build(&Weights::random(seed).root(device))
    }

    fn build(vb: &Vb<B>) -> Result<Self> {
        vb.ignore("fc.weight");
        vb.ignore("fc.bias");
        let stem = vec![
            conv3_s2(vb, "Conv2d_1a_3x3", 3, 32)?,
            BasicConv2d::new(&vb.pp("Conv2d_2a_3x3"), 32, 32, (3, 3), 1, (0, 0))?,
            conv_same(vb, "Conv2d_2b_3x3", 32, 64, (3, 3))?,
            conv1(vb, "Conv2d_3b_1x1", 64, 80)?,
            BasicConv2d::new(&vb.pp("Conv2d_4a_3x3"), 80, 192, (3, 3), 1, (0, 0))?,
        ];
        Ok(Self {
            stem,
            mixed_5: vec![
                InceptionA::new(&vb.pp("Mixed_5b"), 192, 32)?,
                InceptionA::new(&vb.pp("Mixed_5c"), 256, 64)?,
                InceptionA::new(&vb.pp("Mixed_5d"), 288, 64)?,
            ],
            mixed_6a: InceptionB::new(&vb.pp("Mixed_6a"), 288)?,
            mixed_6: vec![
                InceptionC::new(&vb.pp("Mixed_6b"), 768, 128)?,
                InceptionC::new(&vb.pp("Mixed_6c"), 768, 160)?,
                InceptionC::new(&vb.pp("Mixed_6d"), 768, 160)?,
                InceptionC::new(&vb.pp("Mixed_6e"), 768, 192)?,
            ],
            mixed_7a: InceptionD::new(&vb.pp("Mixed_7a"), 768)?,
            mixed_7b: InceptionE::new(&vb.pp("Mixed_7b"), 1280, false)?,
            mixed_7c: InceptionE::new(&vb.pp("Mixed_7c"), 2048, true)?,
        })
    }

    /// Every convolution with its pytorch-fid name (`Mixed_6b.branch7x7_2`).
    fn convs(&self) -> Vec<(String, &BasicConv2d<B>)> {
        let stem = [
            "Conv2d_1a_3x3",
            "Conv2d_2a_3x3",
            "Conv2d_2b_3x3",
            "Conv2d_3b_1x1",
            "Conv2d_4a_3x3",
        ];
        let mut all: Vec<(String, &BasicConv2d<B>)> = stem
            .iter()
            .zip(&self.stem)
            .map(|(n, c)| (n.to_string(), c))
            .collect();
        let mut rest = Vec::new();
        for (name, block) in ["Mixed_5b", "Mixed_5c", "Mixed_5d"]
            .iter()
            .zip(&self.mixed_5)
        {
            rest.extend(prefixed(name, block.convs()));
        }
        rest.extend(prefixed("Mixed_6a", self.mixed_6a.convs()));
        for (name, block) in ["Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"]
            .iter()
            .zip(&self.mixed_6)
        {
            rest.extend(prefixed(name, block.convs()));
        }
        rest.extend(prefixed("Mixed_7a", self.mixed_7a.convs()));
        rest.extend(prefixed("Mixed_7b", self.mixed_7b.convs()));
        rest.extend(prefixed("Mixed_7c", self.mixed_7c.convs()));
        all.extend(rest);
        all
    }

    /// Writes the network as a safetensors state dict in pytorch-fid's names and shapes, with each
    /// batch norm already folded into its convolution (γ = 1, β = the folded bias, μ = 0,
    /// σ² = 1 − ε), which [`InceptionV3::load`] reads back. Written atomically.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        let bytes = |v: Vec<f32>| {
            v.into_iter()
                .flat_map(f32::to_le_bytes)
                .collect::<Vec<u8>>()
        };
        for (name, conv) in self.convs() {
            let w = conv.weight.val();
            let shape = w.dims().to_vec();
            let cout = shape[0];
            let read = |t: burn::tensor::TensorData| {
                t.to_vec::<f32>()
                    .map_err(|e| Error::Numeric(format!("reading `{name}`: {e:?}")))
            };
            tensors.push((
                format!("{name}.conv.weight"),
                shape,
                bytes(read(w.into_data())?),
            ));
            tensors.push((
                format!("{name}.bn.weight"),
                vec![cout],
                bytes(vec![1.0; cout]),
            ));
            tensors.push((
                format!("{name}.bn.bias"),
                vec![cout],
                bytes(read(conv.bias.val().into_data())?),
            ));
            tensors.push((
                format!("{name}.bn.running_mean"),
                vec![cout],
                bytes(vec![0.0; cout]),
            ));
            tensors.push((
                format!("{name}.bn.running_var"),
                vec![cout],
                bytes(vec![(1.0 - BN_EPS) as f32; cout]),
            ));
        }
        let views = tensors
            .iter()
            .map(|(n, shape, b)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| Error::Numeric(format!("`{n}`: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let encoded = safetensors::serialize(views, None)
            .map_err(|e| Error::Numeric(format!("encoding the Inception weights: {e}")))?;
        selfcascade_sd::load::write_atomically(path, |f| std::io::Write::write_all(f, &encoded))?;
        Ok(())
    }

    /// The pool3 features `[N, 2048]` of images `[N, 3, 299, 299]` with values in 0..=255 (scaled
    /// inside to `(x − 128) / 128`, as clean-fid feeds the network).
    pub fn features(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let [n, c, h, w] = images.dims();
        if c != 3 || h < 75 || w < 75 {
            return Err(Error::Input(format!(
                "the Inception takes [N, 3, H, W] images with H, W ≥ 75 (299 for FID), got [{n}, {c}, {h}, {w}]"
            )));
        }
        let x = images.sub_scalar(128.0).div_scalar(128.0);
        let x = self.stem[0].forward(x);
        let x = self.stem[1].forward(x);
        let x = max_pool_3x3_s2(self.stem[2].forward(x));
        let x = self.stem[3].forward(x);
        let x = max_pool_3x3_s2(self.stem[4].forward(x));
        let x = self.mixed_5.iter().fold(x, |x, b| b.forward(x));
        let x = self.mixed_6a.forward(x);
        let x = self.mixed_6.iter().fold(x, |x, b| b.forward(x));
        let x = self.mixed_7a.forward(x);
        let x = self.mixed_7c.forward(self.mixed_7b.forward(x));
        Ok(adaptive_avg_pool2d(x, [1, 1]).reshape([n, FEATURE_DIM]))
    }
}
