"""Oracle for the self-cascade PIPELINE: diffusers text-to-image + img2img, stage by stage, on the tiny families.

For each case this writes, under crates/selfcascade-sd/tests/fixtures/pipelines/:

- <case>.safetensors: the injected inputs (prompt embeddings, stage noise `stage0`, `stage1`, ...) and what
  diffusers did with them at every stage (the bicubic-upsampled pivot `init_stage{r}`, the latent that enters
  the denoising loop `start_latents_stage{r}`, the kept timesteps `timesteps_stage{r}`, SDXL's `time_ids_stage{r}`,
  the final latent `out_stage{r}`);
- <case>.json: the settings (family folder, sizes, steps, strength, guidance, scheduler class and full config,
  diffusers classes, versions), the kept timesteps, tensor statistics, and the checks below.

A self-cascade run with plan d_0 < d_1 < ... is, in diffusers terms:

- stage 0: `StableDiffusion[XL]Pipeline(latents=stage0, height, width, output_type="latent", ...)`; diffusers
  multiplies the `latents` it is given by `scheduler.init_noise_sigma` (the stored `stage0` is the noise BEFORE
  that scaling);
- stage r >= 1: `StableDiffusion[XL]Img2ImgPipeline(image=bicubic(out_stage{r-1}), strength, ...)`; a 4-channel
  `image` is taken as the initial latent as is (no VAE, no scaling factor), and the re-noising noise that
  `prepare_latents` draws with `randn_tensor` is replaced by `stage{r}` (the module's `randn_tensor` symbol is
  patched for that call; the patch asserts it is called exactly once with the right shape).

Every other random draw is forbidden during the runs (the schedulers' and the text-to-image pipelines'
`randn_tensor` raise). The reference is computed in float64 (the UNet is upcast; diffusers' schedulers keep
their float32 alphas/sigmas and Euler's step rounds through float32, as diffusers does) and stored as float32;
every stage r >= 1 starts from the STORED float32 `out_stage{r-1}`, so each stage can be reproduced on its own
from the file. The JSON also records how far a float32 PyTorch run of the whole cascade is from the reference,
and how far an independent hand-written loop (raw scheduler + UNet: add_noise by formula, scale_model_input,
UNet, CFG combine, step) is from the pipelines at each stage.

Run (environment: tools/oracle/README.md):

    HF_HUB_OFFLINE=1 python tools/oracle/pipelines.py                 # all cases
    HF_HUB_OFFLINE=1 python tools/oracle/pipelines.py sd21_cascade    # one case
"""
import argparse
import contextlib
import json
import os
import re
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import diffusers  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
)
from diffusers.schedulers import scheduling_ddim, scheduling_euler_discrete  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle_util import stats  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.path.join(ROOT, "crates", "selfcascade-sd", "tests", "fixtures", "models")
OUT = os.path.join(ROOT, "crates", "selfcascade-sd", "tests", "fixtures", "pipelines")

SEQ = 77

# Stage sizes are (height, width) in pixels; latents are pixels / 4 (the tiny VAE has 3 levels). The UNet needs
# latent sides divisible by 2^(down blocks - 1): 8 for sd21 (4 blocks), 4 for sd15 and sdxl (3 blocks).
CASES = {
    "sd21_cascade": dict(
        family="sd21", seed=21500, pixels=[(32, 64), (64, 128), (128, 256)], steps=10, strength=0.7,
        guidance=7.5, eta=0.0,
        scheduler=None,  # the folder's DDIMScheduler (v_prediction, leading, steps_offset 1, no clipping)
    ),
    "sd15_cascade": dict(
        family="sd15", seed=15500, pixels=[(96, 64), (192, 128)], steps=12, strength=0.7, guidance=1.0, eta=0.0,
        # DDIMScheduler.from_config(<the folder's PNDM config>, **these). clip_sample must be given: the PNDM
        # config on disk has no clip_sample field (PNDMScheduler has no such parameter, so save_pretrained drops
        # it), and DDIMScheduler's default is True (x0 clipped to [-1, 1]); SD 1.5's real scheduler_config.json
        # says "clip_sample": false.
        scheduler=("DDIMScheduler", {"timestep_spacing": "leading", "set_alpha_to_one": False, "steps_offset": 1,
                                     "clip_sample": False}),
    ),
    "sdxl_cascade": dict(
        family="sdxl", seed=30500, pixels=[(48, 80), (96, 160)], steps=8, strength=0.7, guidance=5.0, eta=None,
        scheduler=None,  # the folder's EulerDiscreteScheduler (epsilon, leading, steps_offset 1)
    ),
}

SCHEDULERS = {"DDIMScheduler": DDIMScheduler, "EulerDiscreteScheduler": EulerDiscreteScheduler}


# ---------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------

def load_pipes(case, dtype):
    """Text-to-image and img2img pipelines sharing the family's modules, loaded from the committed folder."""
    fam_dir = os.path.join(MODELS, case["family"])
    xl = case["family"] == "sdxl"
    variant = "fp16" if os.path.exists(os.path.join(fam_dir, "unet", "diffusion_pytorch_model.fp16.safetensors")) \
        else None
    if xl:
        absent = dict(tokenizer=None, tokenizer_2=None, image_encoder=None, feature_extractor=None)
        t2i = StableDiffusionXLPipeline.from_pretrained(fam_dir, variant=variant, dtype=dtype, add_watermarker=False,
                                                        **absent)
        comps = {k: v for k, v in t2i.components.items()}
        i2i = StableDiffusionXLImg2ImgPipeline(**comps, requires_aesthetics_score=False, add_watermarker=False)
    else:
        absent = dict(tokenizer=None, safety_checker=None, feature_extractor=None, image_encoder=None)
        t2i = StableDiffusionPipeline.from_pretrained(fam_dir, variant=variant, dtype=dtype, **absent)
        comps = {k: v for k, v in t2i.components.items()}
        i2i = StableDiffusionImg2ImgPipeline(**comps, requires_safety_checker=False)
    for p in (t2i, i2i):
        p.set_progress_bar_config(disable=True)
    for m in (t2i.unet, t2i.vae, t2i.text_encoder):
        m.eval()
    assert t2i.unet.dtype == dtype, t2i.unet.dtype
    if case["scheduler"] is None:
        cls, cfg = type(t2i.scheduler), dict(t2i.scheduler.config)
    else:
        name, overrides = case["scheduler"]
        cls = SCHEDULERS[name]
        cfg = dict(cls.from_config(t2i.scheduler.config, **overrides).config)
    return dict(t2i=t2i, i2i=i2i, sched_cls=cls, sched_cfg=cfg, unet=t2i.unet, xl=xl, variant=variant,
                fam_dir=fam_dir)


def fresh_scheduler(pipes):
    return pipes["sched_cls"].from_config(pipes["sched_cfg"])


# ---------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------

def make_inputs(case, unet_cfg):
    """Random prompt embeddings and stage noise, float32, from fixed seeds."""
    seed = case["seed"]

    def randn(shape, k):
        return torch.randn(shape, generator=torch.Generator().manual_seed(seed + k), dtype=torch.float32)

    c = unet_cfg.cross_attention_dim
    x = {
        "prompt_embeds": randn((1, SEQ, c), 1),
        "negative_prompt_embeds": randn((1, SEQ, c), 2),
    }
    if case["family"] == "sdxl":
        # text_embeds width = projection_class_embeddings_input_dim - 6 * addition_time_embed_dim
        p = unet_cfg.projection_class_embeddings_input_dim - 6 * unet_cfg.addition_time_embed_dim
        x["pooled_prompt_embeds"] = randn((1, p), 3)
        x["negative_pooled_prompt_embeds"] = randn((1, p), 4)
    for r, (h, w) in enumerate(case["pixels"]):
        x[f"stage{r}"] = randn((1, 4, h // 4, w // 4), 10 + r)
    return x


# ---------------------------------------------------------------------------------------------------------
# Instrumentation
# ---------------------------------------------------------------------------------------------------------

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
def no_hidden_noise(pipe):
    """Schedulers' step noise and the pipeline's own draws raise."""
    with contextlib.ExitStack() as st:
        st.enter_context(patched(scheduling_ddim, "randn_tensor", _forbidden))
        st.enter_context(patched(scheduling_euler_discrete, "randn_tensor", _forbidden))
        st.enter_context(patched(sys.modules[type(pipe).__module__], "randn_tensor", _forbidden))
        yield


@contextlib.contextmanager
def injected_noise(pipe, noise):
    """Make `prepare_latents`' single randn_tensor call return `noise` (checked: one call, same shape)."""
    calls = []

    def fake(shape, generator=None, device=None, dtype=None, layout=None):
        assert tuple(shape) == tuple(noise.shape), (shape, noise.shape)
        calls.append(tuple(shape))
        return noise.to(device=device, dtype=dtype)

    with patched(sys.modules[type(pipe).__module__], "randn_tensor", fake):
        yield calls
    assert len(calls) == 1, f"randn_tensor called {len(calls)} times"


@contextlib.contextmanager
def probe(pipe):
    """Record what the loop sees: scale_model_input's inputs (sample, t) and the UNet's inputs."""
    rec = dict(smi=[], unet=[])
    sched = pipe.scheduler
    orig = sched.scale_model_input

    def smi(sample, timestep=None):
        rec["smi"].append((sample.detach().clone(), timestep))
        return orig(sample, timestep)

    def hook(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        ack = kwargs.get("added_cond_kwargs") or {}
        rec["unet"].append(dict(batch=sample.shape[0], t=t, time_ids=ack.get("time_ids"),
                                text_embeds=ack.get("text_embeds"), ehs=kwargs.get("encoder_hidden_states")))

    sched.scale_model_input = smi
    h = pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield rec
    finally:
        h.remove()
        del sched.scale_model_input


# ---------------------------------------------------------------------------------------------------------
# The cascade through the diffusers pipelines
# ---------------------------------------------------------------------------------------------------------

def kept_start(n, strength):
    """diffusers' get_timesteps: keep the last int(n * strength) timesteps."""
    init_timestep = min(int(n * strength), n)
    return max(n - init_timestep, 0)


def upsample(prev, size):
    return F.interpolate(prev, size=size, mode="bicubic", align_corners=False)


def cond_kwargs(case, x, dtype, r):
    kw = dict(prompt_embeds=x["prompt_embeds"].to(dtype), negative_prompt_embeds=x["negative_prompt_embeds"].to(dtype),
              num_inference_steps=case["steps"], guidance_scale=case["guidance"], output_type="latent")
    if case["eta"] is not None:
        kw["eta"] = case["eta"]
    if case["family"] == "sdxl":
        h, w = case["pixels"][r]
        kw.update(pooled_prompt_embeds=x["pooled_prompt_embeds"].to(dtype),
                  negative_pooled_prompt_embeds=x["negative_pooled_prompt_embeds"].to(dtype),
                  original_size=(h, w), target_size=(h, w), crops_coords_top_left=(0, 0))
    return kw


@torch.no_grad()
def run_cascade(case, pipes, x, dtype, store):
    """Run every stage through the pipelines. With store=True the next stage starts from this stage's output
    rounded to float32 (what the fixture stores); otherwise the run stays in `dtype` throughout."""
    stages = []
    prev = None
    for r, (h, w) in enumerate(case["pixels"]):
        lh, lw = h // 4, w // 4
        noise = x[f"stage{r}"].to(dtype)
        kw = cond_kwargs(case, x, dtype, r)
        rec = dict(stage=r, pixels=[h, w], latent=[lh, lw])
        if r == 0:
            pipe = pipes["t2i"]
            pipe.scheduler = fresh_scheduler(pipes)
            with no_hidden_noise(pipe), probe(pipe) as pr:
                out = pipe(height=h, width=w, latents=noise, **kw).images
            rec["t_start"] = 0
            rec["init"] = None
        else:
            pipe = pipes["i2i"]
            pipe.scheduler = fresh_scheduler(pipes)
            init = upsample(prev, (lh, lw))
            with no_hidden_noise(pipe), injected_noise(pipe, noise), probe(pipe) as pr:
                out = pipe(image=init, strength=case["strength"], **kw).images
            rec["t_start"] = kept_start(case["steps"], case["strength"])
            rec["init"] = init
        sched = pipe.scheduler
        assert out.shape == (1, 4, lh, lw) and out.dtype == dtype, (out.shape, out.dtype)
        rec["pipeline"] = type(pipe).__name__
        rec["init_noise_sigma"] = float(sched.init_noise_sigma)
        rec["timesteps"] = torch.stack([torch.as_tensor(t) for _, t in pr["smi"]]).to(torch.int64)
        assert [int(u["t"]) for u in pr["unet"]] == rec["timesteps"].tolist()
        full = sched.timesteps
        assert torch.equal(rec["timesteps"], full[rec["t_start"]:].to(torch.int64)), (rec["timesteps"], full)
        assert all(float(t) == int(t) for t in full), full  # integer-valued (Euler stores them as float32)
        rec["all_timesteps"] = full.to(torch.int64)
        rec["unet_batch"] = sorted({u["batch"] for u in pr["unet"]})
        first = pr["smi"][0][0]
        rec["start"] = first[:1].clone()
        if first.shape[0] == 2:
            assert torch.equal(first[0], first[1])
        if pipes["xl"]:
            tids = {tuple(u["time_ids"].flatten().tolist()) for u in pr["unet"]}
            assert len(tids) == 1, tids
            rec["time_ids"] = pr["unet"][0]["time_ids"].clone()
        # What entered the loop, by formula.
        if r == 0:
            want = noise * sched.init_noise_sigma
        elif isinstance(sched, EulerDiscreteScheduler):
            sigma = sched.sigmas[rec["t_start"]].to(dtype)
            rec["sigma_first"] = float(sched.sigmas[rec["t_start"]])
            want = rec["init"] + noise * sigma
        else:
            t0 = int(rec["timesteps"][0])
            a = sched.alphas_cumprod[t0].to(dtype)
            rec["alpha_prod_first"] = float(sched.alphas_cumprod[t0])
            want = a ** 0.5 * rec["init"] + (1 - a) ** 0.5 * noise
        rec["start_vs_formula"] = (rec["start"] - want).abs().max().item()
        assert rec["start_vs_formula"] <= 1e-6, rec["start_vs_formula"]
        if r > 0:
            # ... and by the scheduler's own add_noise at the first kept timestep (fresh scheduler, as in the
            # pipeline just before its loop: set_timesteps, set_begin_index).
            s = fresh_scheduler(pipes)
            s.set_timesteps(case["steps"])
            if hasattr(s, "set_begin_index"):
                s.set_begin_index(rec["t_start"])
            via = s.add_noise(rec["init"], noise, s.timesteps[rec["t_start"]:rec["t_start"] + 1])
            rec["start_vs_add_noise"] = (rec["start"] - via).abs().max().item()
            assert rec["start_vs_add_noise"] == 0.0, rec["start_vs_add_noise"]
            if isinstance(sched, EulerDiscreteScheduler):
                rec["sigmas"] = sched.sigmas[rec["t_start"]:].tolist()
        elif isinstance(sched, EulerDiscreteScheduler):
            rec["sigmas"] = sched.sigmas.tolist()
        rec["out"] = out
        prev = out.float().to(dtype) if store else out
        stages.append(rec)
    return stages


# ---------------------------------------------------------------------------------------------------------
# Independent hand-written loop (raw scheduler + UNet)
# ---------------------------------------------------------------------------------------------------------

@torch.no_grad()
def hand_stage(case, pipes, x, dtype, r, init, time_ids_hw=None):
    """One stage without the pipelines: the scheduler's timesteps, add_noise by formula, then
    scale_model_input -> UNet (batch [uncond, cond]) -> CFG combine -> step."""
    unet = pipes["unet"]
    s = fresh_scheduler(pipes)
    n = case["steps"]
    s.set_timesteps(n)
    noise = x[f"stage{r}"].to(dtype)
    euler = isinstance(s, EulerDiscreteScheduler)
    if init is None:
        t_start = 0
        sigma0 = float(s.init_noise_sigma)
        lat = noise * sigma0
    else:
        t_start = n - int(n * case["strength"])
        if euler:
            s.set_begin_index(t_start)  # Euler steps by index; the pipeline does the same in get_timesteps
            lat = init + noise * s.sigmas[t_start].to(dtype)
        else:
            a = s.alphas_cumprod[int(s.timesteps[t_start])].to(dtype)
            lat = torch.sqrt(a) * init + torch.sqrt(1 - a) * noise
    cfg = case["guidance"] > 1.0
    emb = x["prompt_embeds"].to(dtype)
    if cfg:
        emb = torch.cat([x["negative_prompt_embeds"].to(dtype), emb])
    added = None
    if pipes["xl"]:
        h, w = time_ids_hw or case["pixels"][r]
        tid = torch.tensor([[h, w, 0, 0, h, w]], dtype=dtype)
        pooled = x["pooled_prompt_embeds"].to(dtype)
        if cfg:
            pooled = torch.cat([x["negative_pooled_prompt_embeds"].to(dtype), pooled])
            tid = torch.cat([tid, tid])
        added = dict(text_embeds=pooled, time_ids=tid)
    step_kw = {"eta": case["eta"]} if case["eta"] is not None else {}
    for t in s.timesteps[t_start:]:
        inp = torch.cat([lat, lat]) if cfg else lat
        inp = s.scale_model_input(inp, t)
        pred = unet(inp, t, encoder_hidden_states=emb, added_cond_kwargs=added).sample
        if cfg:
            u, c = pred.chunk(2)
            pred = u + case["guidance"] * (c - u)
        lat = s.step(pred, t, lat, **step_kw).prev_sample
    return lat


@torch.no_grad()
def formula_stage(case, pipes, x, r, init):
    """One stage in float64 with NO scheduler code at all: betas, alphas_cumprod, timesteps, sigmas, add_noise,
    input scaling and the DDIM / Euler update written out from the scheduler config (tables in float64, where
    diffusers keeps them in float32, so agreement is ~1e-6 relative, not exact)."""
    cfg = pipes["sched_cfg"]
    f64 = torch.float64
    assert cfg["beta_schedule"] == "scaled_linear" and cfg["timestep_spacing"] == "leading"
    assert cfg["num_train_timesteps"] == 1000 and not cfg.get("rescale_betas_zero_snr", False)
    betas = torch.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, 1000, dtype=f64) ** 2
    acp = torch.cumprod(1 - betas, 0)
    n = case["steps"]
    ratio = 1000 // n
    ts = [i * ratio + cfg["steps_offset"] for i in reversed(range(n))]
    kept = n - int(n * case["strength"]) if init is not None else 0
    ts = ts[kept:]
    noise = x[f"stage{r}"].double()
    euler = pipes["sched_cls"] is EulerDiscreteScheduler
    if euler:
        assert cfg["prediction_type"] == "epsilon" and cfg["final_sigmas_type"] == "zero"
        assert cfg["interpolation_type"] == "linear" and not cfg["use_karras_sigmas"]
        sig = lambda t: ((1 - acp[t]) / acp[t]).sqrt()  # noqa: E731
        sigmas = [sig(t) for t in ts] + [torch.tensor(0.0, dtype=f64)]
        if init is None:
            lat = noise * (sig(ts[0]) ** 2 + 1).sqrt()  # init_noise_sigma = sqrt(sigma_max^2 + 1) (leading)
        else:
            lat = init + sigmas[0] * noise
    else:
        assert not cfg["clip_sample"] and not cfg["thresholding"] and not cfg["set_alpha_to_one"]
        final = acp[0]
        if init is None:
            lat = noise
        else:
            a = acp[ts[0]]
            lat = a.sqrt() * init + (1 - a).sqrt() * noise
    cfg_on = case["guidance"] > 1.0
    emb = x["prompt_embeds"].double()
    added = None
    if cfg_on:
        emb = torch.cat([x["negative_prompt_embeds"].double(), emb])
    if pipes["xl"]:
        h, w = case["pixels"][r]
        tid = torch.tensor([[h, w, 0, 0, h, w]] * (2 if cfg_on else 1), dtype=f64)
        pooled = x["pooled_prompt_embeds"].double()
        if cfg_on:
            pooled = torch.cat([x["negative_pooled_prompt_embeds"].double(), pooled])
        added = dict(text_embeds=pooled, time_ids=tid)
    for i, t in enumerate(ts):
        inp = torch.cat([lat, lat]) if cfg_on else lat
        if euler:
            inp = inp / (sigmas[i] ** 2 + 1).sqrt()
        pred = pipes["unet"](inp, torch.tensor(t), encoder_hidden_states=emb, added_cond_kwargs=added).sample
        if cfg_on:
            u, c = pred.chunk(2)
            pred = u + case["guidance"] * (c - u)
        if euler:
            lat = lat + (sigmas[i + 1] - sigmas[i]) * pred  # derivative (x - x0) / sigma = eps
        else:
            a_t = acp[t]
            a_prev = acp[t - ratio] if t - ratio >= 0 else final
            if cfg["prediction_type"] == "v_prediction":
                x0 = a_t.sqrt() * lat - (1 - a_t).sqrt() * pred
                eps = a_t.sqrt() * pred + (1 - a_t).sqrt() * lat
            else:
                eps = pred
                x0 = (lat - (1 - a_t).sqrt() * eps) / a_t.sqrt()
            lat = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return lat


# ---------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------

def versions():
    import platform
    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "safetensors": safetensors.__version__}


def sched_config_json(cfg):
    out = {k: v for k, v in cfg.items() if not k.startswith("_")}
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(out.items())}


def dumps(obj):
    """json.dumps with indent 2, but lists of numbers on one line."""
    text = json.dumps(obj, indent=2)
    return re.sub(r"\[\s*([-0-9.eE+,\s]*?)\s*\]",
                  lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)


def run_case(name, out_dir):
    case = CASES[name]
    t0 = time.time()
    print(f"== {name}")
    p32 = load_pipes(case, torch.float32)
    x = make_inputs(case, p32["unet"].config)

    p64 = load_pipes(case, torch.float64)
    ref = run_cascade(case, p64, x, torch.float64, store=True)
    f32 = run_cascade(case, p32, x, torch.float32, store=False)

    # Hand loop from the same stage input as the pipeline run it is compared with: every stage in float64,
    # stage 1 also in float32.
    hand = []
    for r in range(len(case["pixels"])):
        d = {}
        for tag, pipes, run, dtype in (("float64", p64, ref, torch.float64), ("float32", p32, f32, torch.float32)):
            if tag == "float32" and r != 1:
                continue
            lat = hand_stage(case, pipes, x, dtype, r, run[r]["init"])
            d[tag] = (lat - run[r]["out"]).abs().max().item()
        hand.append(d)
        print(f"  stage {r}: hand loop vs pipeline max|diff| " + ", ".join(f"{k} {v:.3e}" for k, v in d.items()))
        assert all(v <= 1e-5 for v in d.values()), d
    # Formula loop (no scheduler code) at stages 0 and 1, float64, relative to the output's scale.
    formula = []
    for r in (0, 1):
        lat = formula_stage(case, p64, x, r, ref[r]["init"])
        diff = (lat - ref[r]["out"]).abs().max().item()
        scale = ref[r]["out"].abs().max().item()
        formula.append({"stage": r, "max_abs_diff": diff, "max_abs_out": scale, "relative": diff / scale})
        print(f"  stage {r}: formula loop vs pipeline max|diff| {diff:.3e} (max|out| {scale:.3g})")
        assert diff <= 1e-5 * max(scale, 1.0), formula[-1]

    # How far plausible mistakes move stage 1 (float64, from the same stored out_stage0): the fixture must
    # separate them from float32 noise (f32_torch_max_abs_diff).
    sens = {}
    prev = ref[0]["out"].float().double()
    lh, lw = ref[1]["latent"]
    right = ref[1]["out"]
    bil = F.interpolate(prev, size=(lh, lw), mode="bilinear", align_corners=False)
    sens["bilinear_instead_of_bicubic"] = (hand_stage(case, p64, x, torch.float64, 1, bil) - right).abs().max().item()
    sens["bicubic_align_corners_true"] = (hand_stage(case, p64, x, torch.float64, 1, F.interpolate(
        prev, size=(lh, lw), mode="bicubic", align_corners=True)) - right).abs().max().item()
    if p64["xl"]:
        sens["time_ids_of_stage0_size"] = (hand_stage(case, p64, x, torch.float64, 1, ref[1]["init"],
                                                      time_ids_hw=case["pixels"][0]) - right).abs().max().item()
    print(f"  stage 1 sensitivity: {json.dumps({k: float(f'{v:.3e}') for k, v in sens.items()})}")

    tensors = {k: v.float().contiguous() for k, v in x.items()}
    for rec in ref:
        r = rec["stage"]
        if rec["init"] is not None:
            tensors[f"init_stage{r}"] = rec["init"].float()
        tensors[f"start_latents_stage{r}"] = rec["start"].float()
        tensors[f"timesteps_stage{r}"] = rec["timesteps"].to(torch.int64)
        if "time_ids" in rec:
            tensors[f"time_ids_stage{r}"] = rec["time_ids"].float()
        tensors[f"out_stage{r}"] = rec["out"].float()
    tensors = {k: v.contiguous() for k, v in tensors.items()}

    f32_diff = {}
    for a, b in zip(ref, f32):
        r = a["stage"]
        f32_diff[f"out_stage{r}"] = (b["out"].double() - a["out"].float().double()).abs().max().item()
        f32_diff[f"start_latents_stage{r}"] = (b["start"].double() - a["start"].float().double()).abs().max().item()

    sched_cls = p64["sched_cls"]
    xl = p64["xl"]
    stage_meta = []
    for rec in ref:
        r = rec["stage"]
        m = {
            "stage": r,
            "kind": "text2img" if r == 0 else "img2img",
            "pipeline": rec["pipeline"],
            "pixels_hw": rec["pixels"],
            "latent_hw": rec["latent"],
            "noise": f"stage{r}",
            "t_start_index": rec["t_start"],
            "scheduler_timesteps": rec["all_timesteps"].tolist(),
            "timesteps": rec["timesteps"].tolist(),
            "num_steps_run": len(rec["timesteps"]),
            "unet_batch": rec["unet_batch"][0],
            "start_latents_vs_formula_max_abs_diff": rec["start_vs_formula"],
        }
        if "sigmas" in rec:
            m["sigmas"] = rec["sigmas"]
        if r == 0:
            m["init_noise_sigma"] = rec["init_noise_sigma"]
            m["start_latents"] = "stage0 * init_noise_sigma (diffusers prepare_latents scales the latents passed in)"
        else:
            m["init"] = (f"init_stage{r} = interpolate(out_stage{r - 1}, size=latent_hw, mode='bicubic', "
                         f"align_corners=False)")
            m["strength"] = case["strength"]
            m["kept_steps_rule"] = f"int(N * strength) = int({case['steps']} * {case['strength']}) = {len(rec['timesteps'])}"
            m["init_noise_sigma_unused"] = rec["init_noise_sigma"]
            m["start_latents_vs_scheduler_add_noise_max_abs_diff"] = rec["start_vs_add_noise"]
            if "sigma_first" in rec:
                m["sigma_first"] = rec["sigma_first"]
                m["start_latents"] = f"init_stage{r} + sigmas[t_start_index] * stage{r} (Euler add_noise)"
            else:
                m["alpha_prod_first"] = rec["alpha_prod_first"]
                m["start_latents"] = (f"sqrt(alphas_cumprod[t]) * init_stage{r} + sqrt(1 - alphas_cumprod[t]) * "
                                      f"stage{r}, t = timesteps[0] (DDIM add_noise)")
        if "time_ids" in rec:
            m["time_ids"] = rec["time_ids"].tolist()
        stage_meta.append(m)

    meta = {
        "generator": "tools/oracle/pipelines.py",
        "case": name,
        "versions": versions(),
        "family": case["family"],
        "family_dir": os.path.relpath(p64["fam_dir"], OUT),
        "family_dir_from_repo_root": os.path.relpath(p64["fam_dir"], ROOT),
        "unet_variant": p64["variant"],
        "vae_scale_factor": p64["t2i"].vae_scale_factor,
        "seed": case["seed"],
        "pixels_hw": [list(p) for p in case["pixels"]],
        "latents_hw": [[h // 4, w // 4] for h, w in case["pixels"]],
        "num_inference_steps": case["steps"],
        "strength": case["strength"],
        "guidance_scale": case["guidance"],
        "classifier_free_guidance": case["guidance"] > 1.0,
        "cfg_batch_order": "[negative, positive]; noise = uncond + guidance_scale * (cond - uncond)"
        if case["guidance"] > 1.0 else
        "guidance_scale <= 1: diffusers runs the UNet on the positive prompt only (batch 1); "
        "negative_prompt_embeds is passed but unused",
        "eta": case["eta"],
        "guidance_rescale": 0.0,
        "scheduler_class": sched_cls.__name__,
        "scheduler_config": sched_config_json(p64["sched_cfg"]),
        "scheduler_source": ("the family folder's scheduler/scheduler_config.json" if case["scheduler"] is None else
                             f"{case['scheduler'][0]}.from_config(<family folder's "
                             f"{type(p64['t2i'].scheduler).__name__} config>, **{case['scheduler'][1]})"),
        "diffusers_classes": {"stage0": type(p64["t2i"]).__name__, "stage_r>=1": type(p64["i2i"]).__name__,
                              "scheduler": sched_cls.__name__},
        "output_type": "latent (scaled latent space the UNet sees; no VAE decode)",
        "noise_injection": ("stage0: passed as `latents` (diffusers multiplies it by init_noise_sigma); stage r>=1: "
                            "the img2img module's randn_tensor patched to return stage{r} (called exactly once, in "
                            "prepare_latents); all other randn_tensor calls forbidden"),
        "stages": stage_meta,
        "reference_precision": ("float64 run (UNet upcast from its stored weights), stored as float32; stage r>=1 "
                                "starts from the stored float32 out_stage{r-1}. Scheduler tables (alphas_cumprod, "
                                "sigmas) are diffusers' float32 values"
                                + ("; EulerDiscreteScheduler.step casts the sample to float32 for the update, as "
                                   "diffusers does" if sched_cls is EulerDiscreteScheduler else "")),
        "f32_torch_max_abs_diff": f32_diff,
        "f32_torch_note": "float32 pipelines, the whole cascade chained in float32, vs the stored reference",
        "hand_loop_max_abs_diff": [{"stage": i, **d} for i, d in enumerate(hand)],
        "formula_loop_max_abs_diff": formula,
        "formula_loop": ("float64 loop with no scheduler code: betas/alphas_cumprod/timesteps/sigmas computed from the "
                         "config in float64, add_noise, Euler input scaling and the DDIM (eps or v) / Euler update "
                         "written out; differs from diffusers only by its float32 tables"),
        "stage1_sensitivity_max_abs_diff": sens,
        "hand_loop": ("own loop with the raw scheduler and UNet: set_timesteps(N); keep timesteps[N - int(N*strength):] "
                      "(set_begin_index for Euler); add noise by formula; per step scale_model_input -> UNet -> CFG "
                      "-> step; compared with the pipeline output of the same stage from the same stage input"),
        "tensors": {k: {**stats(v), "dtype": str(v.dtype).replace("torch.", "")} for k, v in tensors.items()},
    }
    if xl:
        meta["sdxl"] = {
            "requires_aesthetics_score": bool(p64["i2i"].config.requires_aesthetics_score),
            "time_ids_layout": "[orig_h, orig_w, crop_top, crop_left, target_h, target_w] (pixels); rows [negative, "
                               "positive]; original_size = target_size = the stage's own pixel size",
            "crops_coords_top_left": [0, 0],
            "text_embeds": "pooled_prompt_embeds (negative first under CFG)",
            "encoder_hidden_states_dim": p64["unet"].config.cross_attention_dim,
        }

    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, f"{name}.safetensors"),
              metadata={"format": "pt"})  # one key: safetensors' metadata map order is not stable
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        f.write(dumps(meta) + "\n")
    for m in stage_meta:
        print(f"  stage {m['stage']}: {m['pipeline']} {m['pixels_hw']} px, latent {m['latent_hw']}, "
              f"init_noise_sigma {m.get('init_noise_sigma', m.get('init_noise_sigma_unused')):.6g}"
              f"{'' if m['stage'] == 0 else ' (unused)'}, timesteps {m['timesteps']}")
    print(f"  f32 vs reference: {json.dumps({k: float(f'{v:.3e}') for k, v in f32_diff.items()})}")
    print(f"  {time.time() - t0:.1f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="*", metavar="CASE", help=f"subset of {list(CASES)} (default: all)")
    ap.add_argument("--out", default=OUT, help="output folder (default: the committed fixtures folder)")
    args = ap.parse_args()
    for c in args.cases:
        if c not in CASES:
            ap.error(f"unknown case {c!r}; known: {list(CASES)}")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    for name in args.cases or list(CASES):
        run_case(name, os.path.abspath(args.out))


if __name__ == "__main__":
    main()
