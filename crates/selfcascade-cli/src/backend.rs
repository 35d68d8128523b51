//! Choosing the backend at run time: `--device cpu|cuda` and `--dtype f32|f16|bf16`.

use crate::CliResult;
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
    /// IEEE half precision (GPU only).
    F16,
    /// bfloat16 (GPU only).
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
        (DeviceArg::Cpu, DtypeArg::F32) => job.run::<burn::backend::Flex>(Default::default()),
        (DeviceArg::Cpu, _) => {
            Err("half precision (--dtype f16/bf16) is for GPUs; use --dtype f32 on the CPU".into())
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
