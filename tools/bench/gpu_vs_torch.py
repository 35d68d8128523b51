"""GPU: selfcascade (burn-cuda) against PyTorch diffusers on the same random-weight SD 2.1 base, in one run.

    python3 tools/bench/gpu_vs_torch.py --bin DIR --out DIR [--model /tmp/sd21] [--steps 50]

DIR (--bin) holds a `--features cuda` release build: `unet_forward` (crates/selfcascade-sd/examples) and
`selfcascade`. The script
1. writes a full-size SD 2.1 base diffusers folder with random weights (every parameter drawn by
   tools/oracle/oracle_util.randomize; CLIP's tokenizer from the test fixtures), unless it exists;
2. parity: one UNet forward (64×64 latent, t = 500) in PyTorch fp32 with TF32 off is the reference;
   `unet_forward --io` runs the same input in f32, f16 and bf16 and reports the relative L2 error, next
   to PyTorch's own fp16/bf16 error;
3. times the UNet forward at 64² and 128² latents, batch 2 (CFG), in both, fp32 and fp16 (PyTorch with
   its defaults: SDPA attention, cuDNN);
4. times a 1024² generation (50 DDIM steps, CFG 7.5, fp16) in both: direct, and self-cascade
   (512² → 1024², strength 0.7: diffusers' StableDiffusionPipeline then StableDiffusionImg2ImgPipeline on
   the bicubic-upsampled latent, which is what selfcascade's cascade equals — see tools/oracle/pipelines.py);
5. with --profile, profiles one fp16 UNet forward at 128² batch 2 in both: cubecl's per-kernel log
   (CUBECL_DEBUG_OPTION=profile, OUT/cubecl-profile.log) and torch.profiler's kernel table
   (OUT/torch-profile.txt);
and writes everything to OUT/results.json. Needs diffusers 0.42 (carried as a wheel on machines without it).
Steps are skipped once --deadline seconds have passed since the start, so one device call always returns.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
sys.dont_write_bytecode = True

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "oracle"))
TOKENIZER = os.path.join(ROOT, "crates", "selfcascade-sd", "tests", "fixtures", "clip-tokenizer")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, act_fn="silu",
    norm_num_groups=32, sample_size=768, scaling_factor=0.18215,
)
TEXT = dict(
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
    max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=512,
    bos_token_id=0, eos_token_id=2, pad_token_id=1,
)
SCHEDULER = dict(
    _class_name="DDIMScheduler", beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    prediction_type="epsilon", timestep_spacing="leading",
)
PROMPT = "a photograph of an astronaut riding a horse"


def log(*a):
    print(*a, flush=True)


def build_model(path, dev="cuda"):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from full_unet_sd21 import SD21_BASE_UNET
    from oracle_util import clip_scale, diffusers_scale, randomize
    from transformers import CLIPTextConfig, CLIPTextModel

    t = time.time()
    tmp = path + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    unet = UNet2DConditionModel(**SD21_BASE_UNET).to(dev)
    randomize(unet, 2100, diffusers_scale, device=dev)
    unet.save_pretrained(os.path.join(tmp, "unet"))
    del unet
    vae = AutoencoderKL(**VAE).to(dev)
    randomize(vae, 2101, diffusers_scale, device=dev)
    vae.save_pretrained(os.path.join(tmp, "vae"))
    del vae
    te = CLIPTextModel(CLIPTextConfig(**TEXT)).to(dev)
    randomize(te, 2102, clip_scale, device=dev)
    te.save_pretrained(os.path.join(tmp, "text_encoder"))
    del te
    tok = os.path.join(tmp, "tokenizer")
    os.makedirs(tok)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(TOKENIZER, f), tok)
    for f in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(TOKENIZER, "configs", "sd21", f), tok)
    os.makedirs(os.path.join(tmp, "scheduler"))
    with open(os.path.join(tmp, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(SCHEDULER, f)
    with open(os.path.join(tmp, "model_index.json"), "w") as f:
        json.dump({
            "_class_name": "StableDiffusionPipeline", "requires_safety_checker": False,
            "feature_extractor": [None, None], "safety_checker": [None, None],
            "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        }, f)
    os.rename(tmp, path)
    log(f"model written in {time.time() - t:.1f} s")


def sync_time(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def rel_l2(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


START = time.time()
DEADLINE = [float("inf")]


def time_left():
    return DEADLINE[0] - (time.time() - START)


def run_rust(cmd, name, timeout, env=None):
    """Runs a selfcascade binary, records GPU memory (nvidia-smi, every 100 ms) and its output."""
    if time_left() < 10:
        log(f"[{name}] skipped: the --deadline has passed")
        return dict(rc="skipped", wall_s=0.0, peak_gpu_mib=None, stdout="", stderr="")
    mem_file = os.path.join("/tmp", f"mem-{name}.csv")
    smi = subprocess.Popen(
        ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-lms", "100"],
        stdout=open(mem_file, "w"), stderr=subprocess.DEVNULL)
    t = time.time()
    timeout = min(timeout, time_left())
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env=None if env is None else {**os.environ, **env})
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        text = [x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (e.stdout, e.stderr)]
        rc, out, err = "timeout", text[0], text[1]
    wall = time.time() - t
    smi.terminate()
    smi.wait()
    used = [int(x) for x in open(mem_file).read().split() if x.strip().isdigit()]
    peak = max(used) - used[0] if used else None  # above what was in use when it started
    log(f"[{name}] rc={rc} wall={wall:.1f}s peak_gpu_mib={peak}\n{out.strip()[-2000:]}\n{err.strip()[-6000:]}")
    return dict(rc=rc, wall_s=round(wall, 2), peak_gpu_mib=peak, stdout=out[-4000:], stderr=err[-4000:])


def profile_torch(unet, out):
    """torch.profiler's CUDA kernel table for one fp16 forward at 128² batch 2 (after two warm-ups)."""
    from torch.profiler import ProfilerActivity, profile

    xs = torch.randn(2, 4, 128, 128, device="cuda", dtype=torch.float16)
    cs = torch.randn(2, 77, 1024, device="cuda", dtype=torch.float16)
    tt = torch.tensor([500.0, 500.0], device="cuda")
    for _ in range(2):
        unet(xs, tt, encoder_hidden_states=cs)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        unet(xs, tt, encoder_hidden_states=cs)
        torch.cuda.synchronize()
    with open(os.path.join(out, "torch-profile.txt"), "w") as f:
        f.write(prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=90))
    log("torch profile written")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="/tmp/sd21")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-rust", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--deadline", type=float, default=float("inf"), help="seconds for the whole run")
    args = ap.parse_args()
    DEADLINE[0] = args.deadline
    os.makedirs(args.out, exist_ok=True)
    res = {"card": torch.cuda.get_device_name(0), "torch": torch.__version__}
    import diffusers
    res["diffusers"] = diffusers.__version__

    def save():
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(res, f, indent=1)

    if not os.path.isdir(args.model):
        build_model(args.model)
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline, UNet2DConditionModel
    from safetensors.torch import save_file

    dev = "cuda"
    torch.set_grad_enabled(False)
    io_path = os.path.join("/tmp", "unet_io.safetensors")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 64, 64, generator=g)
    ctx = torch.randn(1, 77, 1024, generator=g)
    ts = torch.tensor([500.0])

    # 2. Parity reference (fp32, TF32 off) and PyTorch's own half-precision errors.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    unet = UNet2DConditionModel.from_pretrained(args.model, subfolder="unet").to(dev).eval()
    ref = unet(x.to(dev), ts.to(dev), encoder_hidden_states=ctx.to(dev)).sample.float().cpu()
    save_file({"sample": x, "timestep": ts, "encoder_hidden_states": ctx, "out": ref.contiguous()}, io_path)
    res["parity"] = {"reference": "PyTorch fp32 (TF32 off) on the GPU", "torch": {}}
    for name, dt in (("f16", torch.float16), ("bf16", torch.bfloat16)):
        u = unet.to(dt)
        o = u(x.to(dev, dt), ts.to(dev), encoder_hidden_states=ctx.to(dev, dt)).sample.float().cpu()
        res["parity"]["torch"][name] = rel_l2(o, ref)
    unet = unet.float()
    torch.backends.cuda.matmul.allow_tf32 = True  # timings below use PyTorch's defaults otherwise
    torch.backends.cudnn.allow_tf32 = True
    log("parity reference done", res["parity"])
    save()

    unet_bin = os.path.join(args.bin, "unet_forward")
    cli = os.path.join(args.bin, "selfcascade")
    res["unet_rust"] = {}

    def rust_unet(dt, timing=("64,128", "2", "5")):
        r = run_rust([unet_bin, "--device", "cuda", "--dtype", dt, "--unet", os.path.join(args.model, "unet"),
                      "--io", io_path, *timing], f"unet-{dt}", 200)
        res["unet_rust"][dt] = r
        save()
        return r

    if not args.skip_rust:
        if rust_unet("f32")["rc"] != 0:
            subprocess.run("ldd " + unet_bin + "; echo LD_LIBRARY_PATH=$LD_LIBRARY_PATH", shell=True)
        rust_unet("f16")

    # 3. UNet forward timings.
    res["unet_torch"] = []
    if not args.skip_torch:
        for name, dt in (("f32", torch.float32), ("f16", torch.float16)):
            u = unet.to(dt)
            for side in (64, 128):
                xs = torch.randn(2, 4, side, side, device=dev, dtype=dt)
                cs = torch.randn(2, 77, 1024, device=dev, dtype=dt)
                tt = torch.tensor([500.0, 500.0], device=dev)
                s = sync_time(lambda: u(xs, tt, encoder_hidden_states=cs), repeats=5, warmup=2)
                res["unet_torch"].append(dict(dtype=name, side=side, batch=2, forward_s=s))
                log("torch unet", name, side, s)
        res["torch_unet_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        if args.profile:
            profile_torch(unet.to(torch.float16), args.out)
    del unet
    torch.cuda.empty_cache()
    save()

    if args.profile and not args.skip_rust:
        # 5. cubecl's per-kernel profile of the same forward (its summary is logged at each sync).
        log_file = os.path.join(args.out, "cubecl-profile.log")
        res["profile_rust"] = run_rust(
            [unet_bin, "--device", "cuda", "--dtype", "f16", "--unet", os.path.join(args.model, "unet"), "128", "2",
             "2"], "profile-f16", 150, env={"CUBECL_DEBUG_LOG": log_file, "CUBECL_DEBUG_OPTION": "profile"})
        save()

    # 4. Pipelines in PyTorch (fp16).
    if not args.skip_torch and time_left() > 60:
        pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float16,
                                                       safety_checker=None, requires_safety_checker=False).to(dev)
        pipe.set_progress_bar_config(disable=True)
        i2i = StableDiffusionImg2ImgPipeline(**pipe.components)
        i2i.set_progress_bar_config(disable=True)
        kw = dict(guidance_scale=7.5, output_type="np")

        def direct(steps):
            return pipe(PROMPT, height=1024, width=1024, num_inference_steps=steps, **kw)

        def cascade(steps):
            lat = pipe(PROMPT, height=512, width=512, num_inference_steps=steps, guidance_scale=7.5,
                       output_type="latent").images
            up = F.interpolate(lat.float(), scale_factor=2, mode="bicubic").to(lat.dtype)
            return i2i(PROMPT, image=up, strength=0.7, num_inference_steps=steps, **kw)

        torch.cuda.reset_peak_memory_stats()
        res["pipeline_torch"] = {}
        for name, fn in (("direct", direct), ("self-cascade", cascade)):
            fn(2)  # warm-up (cuDNN algorithm choice for these shapes)
            torch.cuda.synchronize()
            t = time.perf_counter()
            fn(args.steps)
            torch.cuda.synchronize()
            res["pipeline_torch"][name] = time.perf_counter() - t
            log("torch pipeline", name, res["pipeline_torch"][name])
        res["torch_pipeline_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        del pipe, i2i
        torch.cuda.empty_cache()
        save()

    if args.skip_rust:
        return
    # 4 in selfcascade: the CLI, f16, timings from --timings (load, encode, sample, decode).
    res["pipeline_rust"] = {}
    base = [cli, "generate", "--model", args.model, "--prompt", PROMPT, "--device", "cuda", "--dtype", "f16",
            "--width", "1024", "--height", "1024", "--guidance", "7.5", "--scheduler", "ddim", "--seed", "0",
            "--quiet", "--timings"]
    r = run_rust(base + ["--method", "self-cascade", "--steps", "2", "--out", os.path.join("/tmp", "warm.png")],
                 "cli-warmup", 150)
    res["pipeline_rust"]["warmup"] = r
    save()
    for method in ("direct", "self-cascade"):
        r = run_rust(base + ["--method", method, "--steps", str(args.steps),
                             "--out", os.path.join("/tmp", f"{method}.png")], f"cli-{method}", 180)
        res["pipeline_rust"][method] = r
        save()
    rust_unet("bf16", timing=("64", "1", "2"))


if __name__ == "__main__":
    main()
