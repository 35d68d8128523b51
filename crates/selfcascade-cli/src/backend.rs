//! Choosing the backend at run time: `--device cpu|cuda` and `--dtype f32|f16|bf16`.

use crate::CliResult;
use burn::backend::Flex;
use burn::tensor::backend::set_default_float_dtype;
use burn::tensor::FloatDType;
use clap::ValueEnum;

/// Where the models run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The CPU (burn-flex).
    Cpu,
    /// An NVIDIA GPU (burn-cuda; needs a build with `--features cuda`).
    Cuda,
}

/// The compute precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    /// 32-bit floats.
    F32,
    /// IEEE half precision (on the CPU: burn-flex's half kernels, slower than f32; for checking half
    /// numerics without a GPU).
    F16,
    /// bfloat16 (on the CPU as for f16).
    Bf16,
}

/// Something generic over the backend that a command runs.
pub trait BackendJob {
    /// Runs on backend `B` with `device`.
    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) -> CliResult;
}

/// Runs `job` on the backend the flags select.
pub fn dispatch(device: DeviceArg, dtype: DtypeArg, job: impl BackendJob) -> CliResult {
    match (device, dtype) {
        (DeviceArg::Cpu, DtypeArg::F32) => job.run::<Flex>(Default::default()),
        (DeviceArg::Cpu, half) => {
            // burn-flex runs half tensors; making the half type the device's default float type turns
            // every tensor the pipeline creates (weights, noise, embeddings) into that type.
            let device = Default::default();
            let dtype = if half == DtypeArg::F16 {
                FloatDType::F16
            } else {
                FloatDType::BF16
            };
            set_default_float_dtype::<Flex>(&device, dtype).map_err(|e| {
                format!("cannot run burn-flex in {dtype:?}: {e} (use --dtype f32 on the CPU)")
            })?;
            job.run::<Flex>(device)
        }
        #[cfg(feature = "cuda")]
        (DeviceArg::Cuda, DtypeArg::F32) => job.run::<burn::backend::Cuda<f32>>(Default::default()),
        #[cfg(feature = "cuda")]
        (DeviceArg::Cuda, DtypeArg::F16) => {
            job.run::<burn::backend::Cuda<half::f16>>(Default::default())
        }
        #[cfg(feature = "cuda")]
        (DeviceArg::Cuda, DtypeArg::Bf16) => {
            job.run::<burn::backend::Cuda<half::bf16>>(Default::default())
        }
        #[cfg(not(feature = "cuda"))]
        (DeviceArg::Cuda, _) => Err(
            "this selfcascade was built without CUDA support; rebuild with `--features cuda` \
             (cargo install --path crates/selfcascade-cli --features cuda) or use --device cpu"
                .into(),
        ),
    }
}
