"""Train the embedded text-to-image demo ``diffkit/tiny-sd-digits``: a tiny Stable Diffusion on scikit-learn's digits.

A one-off example, not a library feature. The checkpoint has the exact Stable Diffusion layout
(``StableDiffusionPipeline`` with a ``CLIPTokenizer``, a transformers ``CLIPTextModel``, diffkit's
``AutoencoderKL`` and ``UNet2DConditionModel`` and a ``DDIMScheduler``), only very small, so the
whole SD stack (tokenizer, text encoder, VAE, conditional UNet, classifier-free guidance, any
scheduler) runs offline on a fresh machine, and diffusers loads the same folder.

Two phases:

1. the VAE (grey 16×16 images, downscale factor 2, 4 latent channels), reconstruction loss plus a
   small KL term; its ``scaling_factor`` is then set so the scaled latents have unit variance;
2. the text encoder and the UNet jointly, epsilon prediction on the scaled latents (min-SNR
   weighted), with an exponential moving average (EMA) of both.

The data: the 8×8 images of ``sklearn.datasets.load_digits`` (values 0..16), scaled to [0, 1],
upsampled to 16×16 (bilinear) and mapped to [-1, 1]; the ambiguous digits are left out (as for
``diffkit/ddpm-digits``; the preprocessing is shared in ``diffkit_pretrained_ddpm_digits.quality``).
Each digit appears plain and in the styles the captions name, rendered by transforming the image:
"thick" (dilated strokes), "thin" (only the strokes' cores), "small" (shrunk into the middle),
"tilted" (rotated ±20-30°) and "inverted" (dark on light); batches draw uniformly from that set, in
which each digit appears once plain and six times styled. Captions are generated at every step:
the digit as a word or a numeral ("the digit seven", "a thick 7", "seven"), captions that name no
digit ("a handwritten digit", "a thin digit"), and empty captions (``--empty-caption-rate``), which
is what the pipeline's classifier-free guidance conditions its unconditional half on.

Every setting, the seed, the data selection, the library versions and the wall and CPU time go
into ``training.json`` in the checkpoint folder. It uses a GPU when one is present
(``--device auto``). Needs scikit-learn, transformers, the diffkit Stable Diffusion plugins and
``diffkit-pretrained-ddpm-digits`` (its ``quality`` module holds the data preprocessing and the
digit classifier)::

    python docs/examples/train_tiny_sd_digits.py --threads 1 \\
        --output plugins/pretrained-tiny-sd-digits/src/diffkit_pretrained_tiny_sd_digits/tiny-sd-digits
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from diffkit import registry
from diffkit.testing import write_clip_tokenizer_files
from diffkit_pretrained_ddpm_digits.quality import DigitClassifier, clear_digits, digits_images

#: where the shipped checkpoint lives in the repository
DEFAULT_OUTPUT = (
    Path(__file__).resolve().parents[2]
    / "plugins/pretrained-tiny-sd-digits/src/diffkit_pretrained_tiny_sd_digits/tiny-sd-digits"
)

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: the styles a caption may name; each is rendered by a transform of the image (see ``render_style``)
STYLES = ("thick", "thin", "small", "tilted", "inverted")
#: every word the tokenizer knows as one token (numerals are single characters, known anyway)
VOCABULARY = ("a", "an", "the", "digit", "number", "handwritten", *DIGIT_WORDS, *STYLES)


@dataclasses.dataclass
class Settings:
    """Everything that determines the run; recorded in ``training.json``."""

    seed: int = 0
    resolution: int = 16
    upsample_mode: str = "bilinear"
    clear_digits_only: float = 0.8  # > 0: keep the digits a cross-validated SVM gives their own label with p >= this
    tilt_degrees: tuple[int, ...] = (20, 30)  # "tilted": rotated by an angle of this size range, either way
    empty_caption_rate: float = 0.15  # share of empty captions: the unconditional half of classifier-free guidance
    no_digit_caption_rate: float = 0.1  # share of captions that name no digit ("a handwritten digit")
    # VAE
    vae_block_out_channels: tuple[int, ...] = (32, 64)
    vae_layers_per_block: int = 1
    latent_channels: int = 4
    vae_steps: int = 400
    vae_batch_size: int = 64
    vae_learning_rate: float = 1e-3
    kl_weight: float = 1e-5
    # text encoder
    text_hidden_size: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate_size: int = 128
    model_max_length: int = 16
    # UNet
    unet_block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    attention_head_dim: int = 8
    steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    final_lr_fraction: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.998
    min_snr_gamma: float = 5.0  # > 0: weight each timestep's loss by min(SNR, gamma)/SNR (Hang et al. 2023)
    # the noise schedule (Stable Diffusion's)
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    weights_dtype: str = "float16"  # of the saved files; they load into float32 unless asked otherwise
    device: str = "auto"
    threads: int = 0  # torch CPU threads; 0: torch's default (on a busy machine 1 can be several times faster)


# ---------------------------------------------------------------------------------------------- data


def render_style(images: torch.Tensor, style: str, s: Settings, generator: torch.Generator) -> torch.Tensor:
    """Draw ``images`` (``(N, 1, H, W)`` in [0, 1], light strokes on dark) in ``style``."""
    if style == "thick":
        return F.max_pool2d(images, 3, stride=1, padding=1)  # dilation: every stroke a pixel wider each side
    if style == "thin":
        return ((images - 0.5) * 2).clamp(0, 1)  # only the strokes' bright cores stay
    if style == "small":
        size = images.shape[-1]
        inner = round(size * 0.625)
        small = F.interpolate(images, size=(inner, inner), mode="bilinear", align_corners=False, antialias=True)
        pad = (size - inner) // 2
        return F.pad(small, (pad, size - inner - pad, pad, size - inner - pad))
    if style == "tilted":
        low, high = s.tilt_degrees
        angle = torch.empty(images.shape[0]).uniform_(low, high, generator=generator)
        sign = torch.randint(0, 2, (images.shape[0],), generator=generator) * 2 - 1
        theta = torch.deg2rad(angle * sign)
        cos, sin = torch.cos(theta), torch.sin(theta)
        zero = torch.zeros_like(cos)
        affine = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(affine, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if style == "inverted":
        return 1 - images
    raise ValueError(f"unknown style {style!r}; known: {STYLES}")


def styled_dataset(images: torch.Tensor, labels: torch.Tensor, s: Settings) -> tuple[torch.Tensor, ...]:
    """Every image plain and in every style (tilted twice, at random angles): images, labels, style index.

    Style index 0 is plain; ``i + 1`` is ``STYLES[i]``. Fixed once, so the VAE can encode it once.
    """
    generator = torch.Generator().manual_seed(s.seed)
    parts, part_labels, part_styles = [images], [labels], [torch.zeros_like(labels)]
    for index, style in enumerate(STYLES, start=1):
        for _ in range(2 if style == "tilted" else 1):
            parts.append(render_style(images, style, s, generator).clamp(0, 1))
            part_labels.append(labels)
            part_styles.append(torch.full_like(labels, index))
    return torch.cat(parts), torch.cat(part_labels), torch.cat(part_styles)


def caption(label: int, style: int, rng: random.Random, s: Settings) -> str:
    """A caption for a digit drawn in a style (0: plain): empty, naming no digit, or naming it."""
    roll = rng.random()
    if roll < s.empty_caption_rate:
        return ""
    style_word = STYLES[style - 1] if style else None
    if roll < s.empty_caption_rate + s.no_digit_caption_rate:
        if style_word is None:
            return rng.choice(["a handwritten digit", "a digit", "the digit", "a number"])
        return rng.choice([f"a {style_word} digit", f"the {style_word} digit", f"{style_word}"])
    name = rng.choice([DIGIT_WORDS[label], DIGIT_WORDS[label], str(label)])
    if style_word is None:
        templates = ["the digit {d}", "the digit {d}", "{d}", "a {d}", "a handwritten {d}", "the number {d}"]
    else:
        templates = ["the digit {d}, {s}", "a {s} {d}", "the {s} digit {d}", "{s} {d}", "a {s} handwritten {d}"]
    return rng.choice(templates).format(d=name, s=style_word)


# --------------------------------------------------------------------------------------------- models


def build_vae(s: Settings, scaling_factor: float = 1.0) -> torch.nn.Module:
    levels = len(s.vae_block_out_channels)
    return registry.get("model", "AutoencoderKL")(
        scaling_factor=scaling_factor,
        in_channels=1,
        out_channels=1,
        latent_channels=s.latent_channels,
        block_out_channels=s.vae_block_out_channels,
        layers_per_block=s.vae_layers_per_block,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        norm_num_groups=s.norm_num_groups,
        sample_size=s.resolution,
    )


def build_tokenizer(folder: Path, s: Settings) -> Any:
    """A CLIP tokenizer whose vocabulary is the byte symbols plus one token per word of ``VOCABULARY``."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(write_clip_tokenizer_files(folder, VOCABULARY, s.model_max_length))


def build_text_encoder(tokenizer: Any, s: Settings) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=s.text_hidden_size,
        intermediate_size=s.text_intermediate_size,
        num_hidden_layers=s.text_layers,
        num_attention_heads=s.text_heads,
        max_position_embeddings=s.model_max_length,
        projection_dim=s.text_hidden_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def build_unet(s: Settings) -> torch.nn.Module:
    """Cross-attention at the two finer latent resolutions and in the middle, plain resnets at the coarsest."""
    levels = len(s.unet_block_out_channels)
    return registry.get("model", "UNet2DConditionModel")(
        sample_size=s.resolution // 2 ** (len(s.vae_block_out_channels) - 1),
        in_channels=s.latent_channels,
        out_channels=s.latent_channels,
        block_out_channels=s.unet_block_out_channels,
        layers_per_block=s.layers_per_block,
        down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
        norm_num_groups=s.norm_num_groups,
        cross_attention_dim=s.text_hidden_size,
        attention_head_dim=s.attention_head_dim,
    )


def build_scheduler(s: Settings) -> Any:
    """Stable Diffusion's noise schedule, as a DDIM config (the demo's recommended sampler)."""
    return registry.get("scheduler", "DDIMScheduler")(
        num_train_timesteps=s.num_train_timesteps,
        beta_start=s.beta_start,
        beta_end=s.beta_end,
        beta_schedule=s.beta_schedule,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
    )


# ------------------------------------------------------------------------------------------- training


def learning_rate(peak: float, s: Settings, step: int, steps: int) -> float:
    """Linear warm-up, then cosine decay to ``final_lr_fraction`` of the peak."""
    if step < s.warmup_steps:
        return peak * (step + 1) / s.warmup_steps
    progress = (step - s.warmup_steps) / max(1, steps - s.warmup_steps)
    floor = s.final_lr_fraction
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``ema ← decay·ema + (1-decay)·model`` for every parameter (buffers are copied)."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)
    for target, source in zip(ema.buffers(), model.buffers(), strict=True):
        target.copy_(source)


def train_vae(
    s: Settings, images: torch.Tensor, device: torch.device, log: Callable[[str], None]
) -> tuple[torch.nn.Module, list[float]]:
    """Reconstruction (L1 + MSE) plus ``kl_weight`` × KL; returns the VAE and its losses."""
    vae = build_vae(s).to(device).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=s.vae_learning_rate, weight_decay=0.0)
    generator = torch.Generator(device).manual_seed(s.seed + 1)
    losses: list[float] = []
    for step in range(s.vae_steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(s.vae_learning_rate, s, step, s.vae_steps)
        index = torch.randint(0, images.shape[0], (s.vae_batch_size,), generator=generator, device=device)
        clean = images[index]
        posterior = vae.encode(clean).latent_dist
        rebuilt = vae.decode(posterior.sample(generator=generator)).sample
        reconstruction = (rebuilt - clean).abs().mean() + (rebuilt - clean).pow(2).mean()
        loss = reconstruction + s.kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), s.grad_clip)
        optimizer.step()
        losses.append(reconstruction.item())
        if (step + 1) % 100 == 0 or step + 1 == s.vae_steps:
            log(f"vae step {step + 1:5d}/{s.vae_steps}  reconstruction {sum(losses[-100:]) / len(losses[-100:]):.4f}")
    return vae.eval().requires_grad_(False), losses


@torch.no_grad()
def encode_all(vae: torch.nn.Module, images: torch.Tensor, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """The posterior mean and standard deviation of every image (unscaled latents)."""
    means, stds = [], []
    for start in range(0, images.shape[0], batch):
        posterior = vae.encode(images[start : start + batch]).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


class CaptionIds:
    """Token ids of captions, as the pipeline computes them (padded to ``model_max_length``), cached."""

    def __init__(self, tokenizer: Any, device: torch.device) -> None:
        self.tokenizer = tokenizer
        self.device = device
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        missing = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if missing:
            ids = self.tokenizer(
                missing, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True,
                return_tensors="pt",
            ).input_ids
            self.cache.update(zip(missing, ids, strict=True))
        return torch.stack([self.cache[c] for c in captions]).to(self.device)


class Denoiser(torch.nn.Module):
    """The text encoder and the UNet as one module, so one optimizer and one EMA cover both."""

    def __init__(self, text_encoder: torch.nn.Module, unet: torch.nn.Module) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.unet = unet

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        states = self.text_encoder(input_ids)[0]
        return self.unet(noisy, t, encoder_hidden_states=states).sample


def train_denoiser(
    s: Settings,
    latents: tuple[torch.Tensor, torch.Tensor],
    labels: torch.Tensor,
    styles: torch.Tensor,
    tokenizer: Any,
    scheduler: Any,
    device: torch.device,
    on_step: Callable[[int, float, Denoiser], None],
) -> tuple[Denoiser, list[float]]:
    """Epsilon prediction on scaled latents with generated captions; returns the EMA and the losses."""
    means, stds = latents
    model = Denoiser(build_text_encoder(tokenizer, s), build_unet(s)).to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.learning_rate, weight_decay=s.weight_decay)
    generator = torch.Generator(device).manual_seed(s.seed + 2)
    rng = random.Random(s.seed)
    ids = CaptionIds(tokenizer, device)
    snr = scheduler.alphas_cumprod / (1 - scheduler.alphas_cumprod)
    weights = (snr.clamp(max=s.min_snr_gamma) / snr if s.min_snr_gamma > 0 else torch.ones_like(snr)).to(device)
    alphas_cumprod = scheduler.alphas_cumprod.to(device)
    label_list, style_list = labels.tolist(), styles.tolist()
    losses: list[float] = []
    for step in range(s.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(s.learning_rate, s, step, s.steps)
        index = torch.randint(0, means.shape[0], (s.batch_size,), generator=generator, device=device)
        mean, std = means[index], stds[index]
        clean = mean + std * torch.randn(mean.shape, generator=generator, device=device)
        noise = torch.randn(clean.shape, generator=generator, device=device)
        t = torch.randint(0, s.num_train_timesteps, (s.batch_size,), generator=generator, device=device)
        # x_t = sqrt(ᾱ_t)·x_0 + sqrt(1-ᾱ_t)·ε
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * clean + (1 - a).sqrt() * noise
        captions = [caption(label_list[i], style_list[i], rng, s) for i in index.tolist()]
        per_image = (model(noisy, t, ids(captions)) - noise).pow(2).mean(dim=(1, 2, 3))
        loss = (per_image * weights[t]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        optimizer.step()
        # the EMA follows the weights closely at first, then averages over ~1/(1-ema_decay) steps
        ema_update(ema, model, min(s.ema_decay, (1 + step) / (10 + step)))
        losses.append(loss.item())
        on_step(step + 1, losses[-1], ema)
    return ema, losses


# ---------------------------------------------------------------------------------------- checkpoint


def assemble(vae: Any, denoiser: Denoiser, tokenizer: Any, scheduler: Any, dtype: torch.dtype | None = None) -> Any:
    """A diffkit ``StableDiffusionPipeline`` of (copies of) the trained parts, on the CPU, no safety checker."""
    def part(module: torch.nn.Module) -> torch.nn.Module:
        return copy.deepcopy(module).to(device="cpu", dtype=dtype).eval()

    pipe = registry.get("pipeline", "StableDiffusionPipeline")(
        vae=part(vae), text_encoder=part(denoiser.text_encoder), tokenizer=tokenizer, unet=part(denoiser.unet),
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def check_quality(pipe: Any, classifier: DigitClassifier, per_digit: int, guidance: float, seed: int = 0) -> dict:
    """The quality test's figure: for each digit, ``per_digit`` images of "the digit <word>" with DDIM 25 steps;
    the share classified as that digit with probability ≥ 0.8."""
    prompts = [f"the digit {word}" for word in DIGIT_WORDS]
    images = pipe(
        prompt=prompts, num_images_per_prompt=per_digit, num_inference_steps=25, guidance_scale=guidance,
        generator=torch.Generator().manual_seed(seed), output_type="np",
    ).images
    proba = classifier.probabilities(images)
    wanted = torch.arange(10).repeat_interleave(per_digit).numpy()
    hits = (proba.argmax(1) == wanted) & (proba.max(1) >= 0.8)
    return {"fraction": float(hits.mean()), "per_digit": [int(h) for h in hits.reshape(10, per_digit).sum(1)]}


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def parse_args(argv: list[str] | None = None) -> tuple[Settings, Path, int, int]:
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="checkpoint folder to write")
    for f in dataclasses.fields(Settings):
        value = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, tuple):
            parser.add_argument(flag, type=int, nargs="+", default=list(value))
        else:
            parser.add_argument(flag, type=type(value), default=value)
    parser.add_argument("--log-every", type=int, default=100, help="print the mean loss every N steps")
    parser.add_argument(
        "--check-every", type=int, default=750,
        help="judge 4 images per digit (DDIM 25, guidance 5) of the EMA weights every N steps (0: only at the end)",
    )
    args = parser.parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)}
    for f in dataclasses.fields(Settings):
        if isinstance(getattr(defaults, f.name), tuple):
            values[f.name] = tuple(values[f.name])
    return Settings(**values), args.output, args.log_every, args.check_every


def main(argv: list[str] | None = None) -> int:
    s, output, log_every, check_every = parse_args(argv)
    torch.manual_seed(s.seed)
    if s.threads > 0:
        torch.set_num_threads(s.threads)
    device = pick_device(s.device)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"{time.perf_counter() - started:7.1f}s  {message}", flush=True)

    output.parent.mkdir(parents=True, exist_ok=True)
    classifier = DigitClassifier.fit(s.resolution, s.upsample_mode)
    images, labels = digits_images(s.resolution, s.upsample_mode)
    keep = clear_digits(images, labels, s.clear_digits_only, s.seed) if s.clear_digits_only > 0 else None
    labels = torch.from_numpy(labels)
    if keep is not None:
        images, labels = images[keep], labels[keep]
    styled, styled_labels, styles = styled_dataset(images, labels, s)
    data = (styled * 2 - 1).to(device)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = build_tokenizer(Path(folder), s)
    scheduler = build_scheduler(s)
    log(f"{images.shape[0]} digits, {data.shape[0]} training images with styles; device {device}, "
        f"{torch.get_num_threads()} threads")

    outside = [0.0, 0.0]  # wall and CPU seconds spent on progress checks, not training
    wall0, cpu0 = time.perf_counter(), time.process_time()
    vae, vae_losses = train_vae(s, data, device, log)
    means, stds = encode_all(vae, data)
    scaling_factor = float(1.0 / means.std())  # the scaled latents' variance ≈ 1 (posterior noise is tiny)
    scaled_vae = build_vae(s, scaling_factor).to(device).eval().requires_grad_(False)
    scaled_vae.load_state_dict(vae.state_dict())
    vae = scaled_vae
    vae_wall, vae_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    with torch.no_grad():
        plain = data[styles.to(device) == 0]
        rebuilt = vae.decode(vae.encode(plain).latent_dist.mode()).sample.clamp(-1, 1).add(1).div(2)
    vae_verdict = classifier.judge(rebuilt.cpu())
    vae_accuracy = float((vae_verdict.labels == labels.numpy()).mean())
    log(f"vae: scaling_factor {scaling_factor:.4f}; reconstructions of the plain digits classified right: "
        f"{vae_accuracy:.3f}, {vae_verdict.summary()}")

    window: list[float] = []

    def report(step: int, loss: float, ema: Denoiser) -> None:
        window.append(loss)
        if step % log_every == 0 or step == s.steps:
            log(f"step {step:5d}/{s.steps}  loss {sum(window) / len(window):.4f}")
            window.clear()
        if check_every and step % check_every == 0 and step != s.steps:
            before = time.perf_counter(), time.process_time()
            pipe = assemble(vae, ema, tokenizer, scheduler)
            figures = {g: check_quality(pipe, classifier, 4, g) for g in (5.0, 1.0)}
            log(f"  DDIM 25, 4 per digit: guidance 5 {figures[5.0]}, guidance 1 {figures[1.0]}")
            outside[0] += time.perf_counter() - before[0]
            outside[1] += time.process_time() - before[1]

    means, stds = means * scaling_factor, stds * scaling_factor
    ema, losses = train_denoiser(s, (means, stds), styled_labels, styles, tokenizer, scheduler, device, report)
    wall = time.perf_counter() - wall0 - outside[0]
    cpu = time.process_time() - cpu0 - outside[1]
    backup = output.with_name(output.name + ".ema.pt")
    # in case saving the checkpoint fails; removed once it is written
    torch.save({"vae": vae.state_dict(), "denoiser": ema.state_dict()}, backup)

    pipe = assemble(vae, ema, tokenizer, scheduler)
    at_end = {f"guidance {g:g}": check_quality(pipe, classifier, 16, g) for g in (5.0, 1.0)}
    log(f"final EMA weights, DDIM 25, 16 per digit: {at_end}")
    record = {
        "what": "diffkit/tiny-sd-digits: a tiny Stable Diffusion on sklearn.datasets.load_digits with generated "
        "captions, trained by docs/examples/train_tiny_sd_digits.py",
        "settings": dataclasses.asdict(s),
        "data": {
            "source": "sklearn.datasets.load_digits",
            "images": int(images.shape[0]),
            "selection": (
                f"the digits that a 5-fold cross-validated SVC(probability=True) gives their own label with "
                f"p >= {s.clear_digits_only}" if s.clear_digits_only > 0 else "all"
            ),
            "preprocessing": (
                f"images/16 -> torch.nn.functional.interpolate(size={s.resolution}, mode={s.upsample_mode!r}, "
                "align_corners=False) -> clamp(0, 1) -> x*2-1"
            ),
            "styled_images": int(data.shape[0]),
            "styles": "each digit plain and in every style of STYLES (tilted twice), rendered by render_style",
            "captions": "generated per step by caption(): empty, naming no digit, or the digit as a word or numeral "
            "with the style word when the image is styled",
            "vocabulary": list(VOCABULARY),
            "resolution": s.resolution,
            "upsample_mode": s.upsample_mode,
            "value_range": [-1.0, 1.0],
        },
        "objective": "VAE: L1 + MSE reconstruction + kl_weight * KL; then text encoder + UNet jointly: epsilon "
        "prediction on latents * scaling_factor, MSE weighted by min(SNR, min_snr_gamma)/SNR, timesteps uniform",
        "scaling_factor": scaling_factor,
        "weights": "VAE as trained; text encoder and UNet: exponential moving average of the trained weights",
        "device": str(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        # training only (progress checks excluded); wall time depends on the machine's load, CPU time less so
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "vae_wall_seconds": round(vae_wall, 1),
        "vae_cpu_seconds": round(vae_cpu, 1),
        "vae_final_reconstruction_loss_mean_last_100": round(sum(vae_losses[-100:]) / len(vae_losses[-100:]), 5),
        "vae_reconstructions_classified_right": vae_accuracy,
        "final_loss_mean_last_100": round(sum(losses[-100:]) / len(losses[-100:]), 5),
        "parameters": {
            "vae": sum(p.numel() for p in vae.parameters()),
            "text_encoder": sum(p.numel() for p in ema.text_encoder.parameters()),
            "unet": sum(p.numel() for p in ema.unet.parameters()),
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": _version("transformers"),
            "sklearn": _version("scikit-learn"),
            "diffkit": _version("diffkit"),
        },
        "check_at_end": {
            "sampler": 'StableDiffusionPipeline, DDIM 25 steps, 16 images of "the digit <word>" per digit, seed 0',
            "classifier": f"SVM, held-out accuracy {classifier.held_out_accuracy:.3f}",
            "measure": "share classified as the prompted digit with probability >= 0.8",
            **at_end,
        },
    }
    folder = Path(assemble(vae, ema, tokenizer, scheduler, getattr(torch, s.weights_dtype)).save_pretrained(output))
    # the tokenizer as the project's own vocabulary files (vocab.json, merges.txt), which every transformers
    # version's CLIPTokenizer reads, rather than the tokenizer.json that the installed one would write
    shutil.rmtree(folder / "tokenizer")
    write_clip_tokenizer_files(folder / "tokenizer", VOCABULARY, s.model_max_length)
    (folder / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    for path in [folder, *folder.rglob("*")]:  # package data: readable by everyone who installs it
        path.chmod(0o755 if path.is_dir() else 0o644)
    backup.unlink()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    log(f"wrote {folder} ({size / 1e6:.2f} MB) after {record['wall_seconds']} s of training "
        f"({record['cpu_seconds']} s CPU) on {record['device']}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DIFFKIT_STRICT_PLUGINS", "1")
    sys.exit(main())
