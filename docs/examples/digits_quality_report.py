"""Print how recognisable the digits of ``diffkit/ddpm-digits`` are, per sampler and step count.

For each sampler it generates 64 images with a fixed seed and lets the classifier of
``diffkit_pretrained_ddpm_digits.quality`` (an SVM trained on scikit-learn's digits at the
model's resolution) label them: the share of images whose top-class probability is at least
0.8, and how many of the 10 digits appear among those. The quality test asserts the same
figures for DDIM with 50 steps (at least 80 % and 9 digits).

Samplers: DDPM (the checkpoint's own pipeline), DDIM (``DDIMPipeline`` on the same weights) and,
where the PNDM plugin is installed, PNDM. Run::

    python docs/examples/digits_quality_report.py [--seed 0] [--num-images 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch

from diffkit import DiffusionPipeline, registry
from diffkit_pretrained_ddpm_digits import NAME
from diffkit_pretrained_ddpm_digits.quality import DigitClassifier

#: (label, pipeline class name, number of steps)
SAMPLERS = (
    ("DDPM", "DDPMPipeline", 1000),
    ("DDIM", "DDIMPipeline", 10),
    ("DDIM", "DDIMPipeline", 50),
    ("PNDM", "PNDMPipeline", 50),
)


def sample(base: Any, pipeline_name: str, steps: int, num_images: int, seed: int) -> tuple[Any, float]:
    """``num_images`` images (numpy, NHWC in [0, 1]) from ``pipeline_name`` on ``base``'s components."""
    pipeline_cls = registry.get("pipeline", pipeline_name)
    components = dict(base.components)
    scheduler_name = pipeline_name.replace("Pipeline", "Scheduler")
    if registry.has("scheduler", scheduler_name):  # e.g. PNDMPipeline takes a PNDMScheduler as it is given
        components["scheduler"] = registry.get("scheduler", scheduler_name).from_config(base.scheduler.config)
    pipe = pipeline_cls(**components)
    pipe.set_progress_bar_config(disable=True)
    started = time.perf_counter()
    images = pipe(
        batch_size=num_images,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    ).images
    return images, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-images", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    classifier = DigitClassifier.for_checkpoint()
    print(f"classifier: SVM, held-out accuracy {classifier.held_out_accuracy:.3f} on scikit-learn's digits "
          f"at {classifier.resolution}x{classifier.resolution}")
    base = DiffusionPipeline.from_pretrained(NAME)
    print(f"{args.num_images} images per row, seed {args.seed}\n")
    print("| sampler | steps | p >= 0.8 | digits present | confident images per digit 0-9 | seconds |")
    print("|---|---|---|---|---|---|")
    for label, pipeline_name, steps in SAMPLERS:
        if not registry.has("pipeline", pipeline_name):
            print(f"| {label} | {steps} | - | - | {pipeline_name} is not installed | - |")
            continue
        images, seconds = sample(base, pipeline_name, steps, args.num_images, args.seed)
        verdict = classifier.judge(images)
        counts = " ".join(str(verdict.counts[d]) for d in range(10))
        print(
            f"| {label} | {steps} | {verdict.confident_fraction:.0%} | {len(verdict.digits_present)}/10 | "
            f"{counts} | {seconds:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
