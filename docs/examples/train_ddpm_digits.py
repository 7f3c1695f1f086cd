"""Train the embedded demo model ``diffkit/ddpm-digits``: a small DDPM on scikit-learn's digits.

A one-off example, not a library feature. It trains diffkit's own ``UNet2DModel`` (a plain
``torch.nn.Module``) with the DDPM noise-prediction loss (min-SNR weighted), noising with
``DDPMScheduler.add_noise``, keeps an exponential moving average (EMA) of the weights, and
writes the EMA weights as a ``DDPMPipeline`` checkpoint in the diffusers layout with
``save_pretrained``. Every setting, the seed, the library versions and the training time go
into ``training.json`` in the checkpoint folder, so that the run can be repeated and the data
preprocessing reproduced exactly (the quality test reads it).

The data: the 8×8 images of ``sklearn.datasets.load_digits`` (values 0..16), scaled to [0, 1],
upsampled to ``--resolution`` with ``torch.nn.functional.interpolate`` (bilinear,
``align_corners=False``) and mapped to [-1, 1]; the few ambiguous digits (those a
cross-validated SVM does not give their own label with probability 0.8) are left out.

While it trains it judges 64 DDIM samples of the EMA weights with the digit classifier every
``--check-every`` steps, and once more at the end (recorded in ``training.json``). It uses a
GPU when one is present (``--device auto``); on the CPU the default run takes about an hour of
one core (see ``cpu_seconds`` in ``training.json``; ``--steps 1500`` gives a rougher model in a
quarter of that). Needs scikit-learn, the diffkit
DDPM/DDIM plugins and ``diffkit-pretrained-ddpm-digits`` (its ``quality`` module holds the data
preprocessing)::

    python docs/examples/train_ddpm_digits.py --threads 1 \\
        --output plugins/pretrained-ddpm-digits/src/diffkit_pretrained_ddpm_digits/ddpm-digits
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from diffkit import registry
from diffkit_pretrained_ddpm_digits.quality import DigitClassifier, Verdict, clear_digits, digits_images

#: where the shipped checkpoint lives in the repository
DEFAULT_OUTPUT = (
    Path(__file__).resolve().parents[2]
    / "plugins/pretrained-ddpm-digits/src/diffkit_pretrained_ddpm_digits/ddpm-digits"
)


@dataclasses.dataclass
class Settings:
    """Everything that determines the run; recorded in ``training.json``."""

    seed: int = 0
    resolution: int = 16
    upsample_mode: str = "bilinear"
    clear_digits_only: float = 0.8  # > 0: keep the digits a cross-validated SVM gives their own label with p >= this
    steps: int = 6000
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    final_lr_fraction: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.998
    min_snr_gamma: float = 5.0  # > 0: weight each timestep's loss by min(SNR, gamma)/SNR (Hang et al. 2023)
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    attention_head_dim: int = 8
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    timestep_spacing: str = "leading"  # saved in the scheduler config: how samplers pick their timesteps
    weights_dtype: str = "float16"  # of the saved file; it loads into float32 unless asked otherwise
    device: str = "auto"
    threads: int = 0  # torch CPU threads; 0: torch's default (on a busy machine 1 can be several times faster)


def build_unet(s: Settings) -> torch.nn.Module:
    """The tiny denoiser: plain resnet levels, attention at the lowest resolution and in the middle."""
    unet_cls = registry.get("model", "UNet2DModel")
    levels = len(s.block_out_channels)
    return unet_cls(
        sample_size=s.resolution,
        in_channels=1,
        out_channels=1,
        block_out_channels=s.block_out_channels,
        layers_per_block=s.layers_per_block,
        down_block_types=("DownBlock2D",) * (levels - 1) + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1),
        norm_num_groups=s.norm_num_groups,
        attention_head_dim=s.attention_head_dim,
    )


def build_scheduler(s: Settings) -> Any:
    """The DDPM noise schedule used for training and saved with the checkpoint."""
    scheduler_cls = registry.get("scheduler", "DDPMScheduler")
    return scheduler_cls(
        num_train_timesteps=s.num_train_timesteps,
        beta_schedule=s.beta_schedule,
        timestep_spacing=s.timestep_spacing,
        clip_sample=True,
    )


def learning_rate(s: Settings, step: int) -> float:
    """Linear warm-up, then cosine decay to ``final_lr_fraction`` of the peak."""
    if step < s.warmup_steps:
        return s.learning_rate * (step + 1) / s.warmup_steps
    progress = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
    floor = s.final_lr_fraction
    return s.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``ema ← decay·ema + (1-decay)·model`` for every parameter (buffers are copied)."""
    ema_params = list(ema.parameters())
    torch._foreach_lerp_(ema_params, list(model.parameters()), 1.0 - decay)
    for target, source in zip(ema.buffers(), model.buffers(), strict=True):
        target.copy_(source)


def train(
    s: Settings, on_step: Callable[[int, float, torch.nn.Module], None] | None = None
) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """Train and return ``(ema_unet, scheduler, record)``; ``on_step(step, loss, ema)`` sees progress."""
    torch.manual_seed(s.seed)
    if s.threads > 0:
        torch.set_num_threads(s.threads)
    device = pick_device(s.device)
    data, labels = digits_images(s.resolution, s.upsample_mode)
    if s.clear_digits_only > 0:
        data = data[clear_digits(data, labels, s.clear_digits_only, s.seed)]
    data = (data * 2 - 1).to(device)
    unet = build_unet(s).to(device).train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    scheduler = build_scheduler(s)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=s.learning_rate, weight_decay=s.weight_decay)
    generator = torch.Generator(device).manual_seed(s.seed)
    snr = scheduler.alphas_cumprod / (1 - scheduler.alphas_cumprod)
    weights = (snr.clamp(max=s.min_snr_gamma) / snr if s.min_snr_gamma > 0 else torch.ones_like(snr)).to(device)

    losses: list[float] = []
    outside = [0.0, 0.0]  # wall and CPU seconds spent in on_step (progress checks), not training
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in range(s.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(s, step)
        index = torch.randint(0, data.shape[0], (s.batch_size,), generator=generator, device=device)
        clean = data[index]
        noise = torch.randn(clean.shape, generator=generator, device=device)
        t = torch.randint(0, s.num_train_timesteps, (s.batch_size,), generator=generator, device=device)
        noisy = scheduler.add_noise(clean, noise, t)
        per_image = (unet(noisy, t).sample - noise).pow(2).mean(dim=(1, 2, 3))
        loss = (per_image * weights[t]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), s.grad_clip)
        optimizer.step()
        # the EMA follows the weights closely at first, then averages over ~1/(1-ema_decay) steps
        ema_update(ema, unet, min(s.ema_decay, (1 + step) / (10 + step)))
        losses.append(loss.item())
        if on_step is not None:
            before = time.perf_counter(), time.process_time()
            on_step(step + 1, losses[-1], ema)
            outside[0] += time.perf_counter() - before[0]
            outside[1] += time.process_time() - before[1]
    wall = time.perf_counter() - start - outside[0]
    cpu = time.process_time() - cpu_start - outside[1]

    record = {
        "what": "diffkit/ddpm-digits: DDPM on sklearn.datasets.load_digits, trained by docs/examples/train_ddpm_digits.py",
        "settings": dataclasses.asdict(s),
        "data": {
            "source": "sklearn.datasets.load_digits",
            "images": int(data.shape[0]),
            "selection": (
                f"the digits that a 5-fold cross-validated SVC(probability=True) gives their own label with "
                f"p >= {s.clear_digits_only}" if s.clear_digits_only > 0 else "all"
            ),
            "preprocessing": (
                f"images/16 -> torch.nn.functional.interpolate(size={s.resolution}, mode={s.upsample_mode!r}, "
                "align_corners=False) -> clamp(0, 1) -> x*2-1"
            ),
            "resolution": s.resolution,
            "upsample_mode": s.upsample_mode,
            "value_range": [-1.0, 1.0],
        },
        "objective": "epsilon prediction, MSE (weighted by min(SNR, min_snr_gamma)/SNR when min_snr_gamma > 0), "
        "timesteps uniform in [0, num_train_timesteps)",
        "weights": "exponential moving average of the trained weights",
        "device": str(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        # training only (progress checks excluded); wall time depends on the machine's load, CPU time less so
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "final_loss_mean_last_100": round(sum(losses[-100:]) / len(losses[-100:]), 5),
        "parameters": sum(p.numel() for p in ema.parameters()),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "sklearn": _version("scikit-learn"),
            "diffkit": _version("diffkit"),
        },
    }
    return ema, scheduler, record


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def save(
    ema: torch.nn.Module, scheduler: Any, record: dict[str, Any], output: Path, weights_dtype: str, pipeline_cls: type
) -> Path:
    """Write the checkpoint with ``DDPMPipeline.save_pretrained`` and add ``training.json``."""
    unet = copy.deepcopy(ema).to(device="cpu", dtype=getattr(torch, weights_dtype))
    folder = Path(pipeline_cls(unet=unet, scheduler=scheduler).save_pretrained(output))
    (folder / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    for path in [folder, *folder.rglob("*")]:  # package data: readable by everyone who installs it
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


@torch.no_grad()
def check_quality(
    ema: torch.nn.Module, scheduler: Any, classifier: DigitClassifier, ddim_cls: type, steps: int = 50, seed: int = 0
) -> Verdict:
    """The quality bar of the test, on the current EMA weights: 64 images, DDIM, ``steps`` steps."""
    pipe = ddim_cls(unet=ema.eval(), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    images = pipe(batch_size=64, num_inference_steps=steps, generator=generator, output_type="np").images
    return classifier.judge(images)


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
        "--check-every", type=int, default=500,
        help="judge 64 DDIM-50 samples of the EMA weights with the digit classifier every N steps (0: only at the end)",
    )
    args = parser.parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)}
    values["block_out_channels"] = tuple(values["block_out_channels"])
    return Settings(**values), args.output, args.log_every, args.check_every


def main(argv: list[str] | None = None) -> int:
    settings, output, log_every, check_every = parse_args(argv)
    window: list[float] = []
    started = time.perf_counter()
    classifier = DigitClassifier.fit(settings.resolution, settings.upsample_mode)
    scheduler = build_scheduler(settings)
    # resolved (imported) before training, so that the end of a long run cannot trip over the code changing
    ddpm_cls, ddim_cls = registry.get("pipeline", "DDPMPipeline"), registry.get("pipeline", "DDIMPipeline")

    def report(step: int, loss: float, ema: torch.nn.Module) -> None:
        window.append(loss)
        if step % log_every == 0 or step == settings.steps:
            print(f"step {step:5d}/{settings.steps}  loss {sum(window) / len(window):.4f}  "
                  f"{time.perf_counter() - started:6.1f}s", flush=True)
            window.clear()
        if check_every and step % check_every == 0 and step != settings.steps:
            print(f"  DDIM 50 steps: {check_quality(ema, scheduler, classifier, ddim_cls).summary()}", flush=True)

    ema, scheduler, record = train(settings, report)
    output.parent.mkdir(parents=True, exist_ok=True)
    backup = output.with_name(output.name + ".ema.pt")
    torch.save(ema.state_dict(), backup)  # in case saving the checkpoint fails; removed once it is written
    verdict = check_quality(ema, scheduler, classifier, ddim_cls)
    print(f"final EMA weights, DDIM 50 steps: {verdict.summary()}")
    record["check_at_end"] = {
        "sampler": "DDIMPipeline, 50 steps, 64 images, seed 0",
        "classifier": f"SVM, held-out accuracy {classifier.held_out_accuracy:.3f}",
        "confident_fraction": verdict.confident_fraction,
        "digits_present": verdict.digits_present,
    }
    folder = save(ema, scheduler, record, output, settings.weights_dtype, ddpm_cls)
    backup.unlink()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"wrote {folder} ({size / 1e6:.2f} MB) after {record['wall_seconds']} s of training "
          f"({record['cpu_seconds']} s CPU) on {record['device']}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DIFFKIT_STRICT_PLUGINS", "1")
    sys.exit(main())
