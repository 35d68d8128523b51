"""Oracle for the video PIPELINE: diffusers text-to-video + video-to-video on latents, stage by stage, with the
tiny ModelScope-shaped UNet of tools/oracle/unet3d.py and the tiny SD 2.1 VAE of tools/oracle/models.py.

A self-cascade run with plan 32² -> 64² (latents 8² -> 16², 3 frames, 4 steps, strength 0.7, guidance 7.5) is,
in diffusers terms:

- stage 0: `TextToVideoSDPipeline(latents=stage0, num_frames=3, height=32, width=32, output_type="latent")`
  (the pipeline multiplies the given latents by `scheduler.init_noise_sigma`, 1 for DDIM); this is also
  direct sampling at 32²;
- stage 1: `VideoToVideoSDPipeline(video=bicubic(out_stage0) frame by frame, strength=0.7, output_type="latent")`;
  a 4-channel `video` (given `[B, T, C, h, w]`, as the pipeline's video processor expects) is taken as the
  initial latent as is, and the re-noising noise that `prepare_latents` draws (frames folded into the batch,
  `[B·T, C, h, w]`) is replaced by `stage1` (stored `[B, C, T, h, w]`; patched, checked to be drawn once with
  the right shape).

Every other random draw raises. References run in float64 and are stored as float32; stage 1 starts from the
STORED float32 `out_stage0`. `frames` are the decoded frames of `out_stage1` (pipeline `decode_latents` +
`postprocess_video(output_type="pt")`, values in [0, 1], `[B, T, 3, H, W]`).

Writes crates/selfcascade-sd/tests/fixtures/models/ms-t2v/{scheduler/scheduler_config.json (ModelScope's DDIM
config), io/pipeline.safetensors, io/pipeline.json}. Run after unet3d.py:

    HF_HUB_OFFLINE=1 python tools/oracle/video_pipeline.py
"""
import contextlib
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import diffusers  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import AutoencoderKL, DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel  # noqa: E402
from diffusers import VideoToVideoSDPipeline  # noqa: E402
from diffusers.schedulers import scheduling_ddim  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle_util import stats  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "crates", "selfcascade-sd", "tests", "fixtures", "models")
OUT = os.path.join(FIX, "ms-t2v")

# ali-vilab/text-to-video-ms-1.7b's scheduler/scheduler_config.json.
SCHEDULER = dict(beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, clip_sample=False,
                 num_train_timesteps=1000, prediction_type="epsilon", set_alpha_to_one=False, steps_offset=1,
                 trained_betas=None)
CASE = dict(frames=3, pixels=[[32, 32], [64, 64]], steps=4, strength=0.7, guidance=7.5, seed=900)


def _forbidden(*a, **k):
    raise AssertionError("unexpected randn_tensor call: every random draw must be injected")


@contextlib.contextmanager
def patched(module, name, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


@contextlib.contextmanager
def randn(pipe, noise):
    """The pipeline module's randn_tensor returns `noise` once (or raises when `noise` is None)."""
    calls = []

    def fake(shape, generator=None, device=None, dtype=None, layout=None):
        assert noise is not None, "unexpected randn_tensor call"
        assert tuple(shape) == tuple(noise.shape), (shape, noise.shape)
        calls.append(tuple(shape))
        return noise.to(device=device, dtype=dtype)

    with patched(scheduling_ddim, "randn_tensor", _forbidden), \
            patched(sys.modules[type(pipe).__module__], "randn_tensor", fake):
        yield
    assert len(calls) == (0 if noise is None else 1), calls


def run(unet, vae, x, dtype):
    sched = DDIMScheduler(**SCHEDULER)
    t2v = TextToVideoSDPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=sched)
    v2v = VideoToVideoSDPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=sched)
    for p in (t2v, v2v):
        p.set_progress_bar_config(disable=True)
    kw = dict(prompt_embeds=x["prompt_embeds"].to(dtype), negative_prompt_embeds=x["negative_prompt_embeds"].to(dtype),
              num_inference_steps=CASE["steps"], guidance_scale=CASE["guidance"], output_type="latent")
    (h0, w0), (h1, w1) = CASE["pixels"]
    with randn(t2v, None):
        out0 = t2v(latents=x["stage0"].to(dtype), num_frames=CASE["frames"], height=h0, width=w0, **kw).frames
    # Stage 1 starts from the stored (float32) stage-0 result.
    out0 = out0.float()
    b, c, t, h, w = out0.shape
    init = F.interpolate(out0.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w).double(), size=(h1 // 4, w1 // 4),
                         mode="bicubic", align_corners=False)
    init = init.reshape(b, t, c, h1 // 4, w1 // 4).permute(0, 2, 1, 3, 4)
    # The pipeline takes videos as [B, T, C, h, w] and draws the re-noising noise frames-folded, [B·T, C, h, w].
    n1 = x["stage1"]
    n1 = n1.permute(0, 2, 1, 3, 4).reshape(b * t, c, *n1.shape[3:])
    with randn(v2v, n1.to(dtype)):
        out1 = v2v(video=init.permute(0, 2, 1, 3, 4).to(dtype), strength=CASE["strength"], **kw).frames
    frames = v2v.video_processor.postprocess_video(video=v2v.decode_latents(out1.to(dtype)), output_type="pt")
    return {"out_stage0": out0, "init_stage1": init, "out_stage1": out1, "frames": frames}


def main():
    torch.set_grad_enabled(False)
    torch.set_num_threads(1)
    unet = UNet3DConditionModel.from_pretrained(os.path.join(OUT, "unet"), variant="fp16", dtype=torch.float64).eval()
    vae = AutoencoderKL.from_pretrained(os.path.join(FIX, "sd21", "vae"), dtype=torch.float64).eval()
    g = torch.Generator().manual_seed(CASE["seed"])
    (h0, w0), (h1, w1) = CASE["pixels"]
    f = CASE["frames"]
    x = {
        "prompt_embeds": torch.randn(1, 7, 32, generator=g),
        "negative_prompt_embeds": torch.randn(1, 7, 32, generator=g),
        "stage0": torch.randn(1, 4, f, h0 // 4, w0 // 4, generator=g),
        "stage1": torch.randn(1, 4, f, h1 // 4, w1 // 4, generator=g),
    }
    y = run(unet, vae, x, torch.float64)
    y32 = run(unet.float(), vae.float(), x, torch.float32)
    os.makedirs(os.path.join(OUT, "scheduler"), exist_ok=True)
    DDIMScheduler(**SCHEDULER).save_config(os.path.join(OUT, "scheduler"))
    tensors = {k: v.detach().float().contiguous() for k, v in {**x, **y}.items()}
    save_file(tensors, os.path.join(OUT, "io", "pipeline.safetensors"), metadata={"format": "pt"})
    meta = {
        "generator": "tools/oracle/video_pipeline.py",
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
        "case": CASE,
        "vae": "fixtures/models/sd21/vae (latent factor 4)",
        "diffusers_classes": ["TextToVideoSDPipeline (stage 0)", "VideoToVideoSDPipeline (stage 1)", "DDIMScheduler"],
        "f32_torch_max_abs_diff": {k: float((y[k].double() - y32[k].double()).abs().max()) for k in y},
        "io": {k: stats(v) for k, v in tensors.items()},
    }
    with open(os.path.join(OUT, "io", "pipeline.json"), "w") as fh:
        json.dump(meta, fh, indent=2)
        fh.write("\n")
    print(json.dumps({k: meta[k] for k in ["f32_torch_max_abs_diff"]}, indent=1))
    print({k: stats(v) for k, v in y.items()})


if __name__ == "__main__":
    main()
