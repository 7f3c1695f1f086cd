"""Print how often ``diffkit/tiny-sd-digits`` draws the digit its prompt names, per sampler and step count.

For each sampler and step count it draws ``--per-digit`` images of "the digit <word>" for every
digit 0-9 (fixed seed) at guidance 5 and at guidance 1 (no classifier-free guidance), and the
classifier shared with the DDPM demo (an SVM trained on scikit-learn's digits at the model's
resolution) labels them: the share classified as the prompted digit with probability ≥ 0.8, and
those hits per digit. Then the confusion matrix of the recommended call (DDIM, 25 steps,
guidance 5). ``tests/test_tiny_sd_digits_quality.py`` asserts the DDIM-25 figures. Run::

    python docs/examples/tiny_sd_digits_quality_report.py [--seed 0] [--per-digit 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from diffkit import DiffusionPipeline, registry
from diffkit_pretrained_tiny_sd_digits import NAME, RECOMMENDED_CALL
from diffkit_pretrained_tiny_sd_digits.quality import PromptedVerdict, classifier, draw_every_digit

#: (label, scheduler class name, extra scheduler config)
SAMPLERS = (
    ("DDIM", "DDIMScheduler", {}),
    ("Euler", "EulerDiscreteScheduler", {}),
    ("DPM++ 2M", "DPMSolverMultistepScheduler", {}),
    ("UniPC", "UniPCMultistepScheduler", {}),
)
STEPS = (10, 25)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-digit", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    judge = classifier(seed=args.seed)
    print(f"classifier: SVM, held-out accuracy {judge.held_out_accuracy:.3f} at {judge.resolution}x{judge.resolution}")
    base = DiffusionPipeline.from_pretrained(NAME)
    base.set_progress_bar_config(disable=True)
    print(f'{args.per_digit} images of "the digit <word>" per digit, seed {args.seed}\n')
    print("| sampler | steps | guidance 5 | hits per digit 0-9 | guidance 1 | seconds (guidance 5) |")
    print("|---|---|---|---|---|---|")
    recommended = None
    for label, name, extra in SAMPLERS:
        if not registry.has("scheduler", name):
            print(f"| {label} | - | {name} is not installed | | | |")
            continue
        pipe = type(base)(**{**base.components, "scheduler": registry.get("scheduler", name).from_config(
            {**dict(base.scheduler.config), **extra})}, **base.settings)
        pipe.set_progress_bar_config(disable=True)
        for steps in STEPS:
            verdicts = {}
            for guidance in (RECOMMENDED_CALL["guidance_scale"], 1.0):
                started = time.perf_counter()
                images, wanted = draw_every_digit(
                    pipe, args.per_digit, seed=args.seed, num_inference_steps=steps, guidance_scale=guidance
                )
                verdicts[guidance] = (PromptedVerdict.judge(judge, images, wanted), time.perf_counter() - started)
            guided, seconds = verdicts[RECOMMENDED_CALL["guidance_scale"]]
            unguided = verdicts[1.0][0]
            print(f"| {label} | {steps} | {guided.hit_fraction:.0%} | {' '.join(map(str, guided.hits_per_digit))} | "
                  f"{unguided.hit_fraction:.0%} | {seconds:.1f} |", flush=True)
            if name == "DDIMScheduler" and steps == RECOMMENDED_CALL["num_inference_steps"]:
                recommended = guided
    if recommended is not None:
        print("\nconfusion matrix, DDIM 25 steps, guidance 5 (rows: prompted digit, columns: classifier's top class)")
        print("| | " + " | ".join(map(str, range(10))) + " |")
        print("|---" * 11 + "|")
        for digit, row in enumerate(recommended.confusion()):
            print(f"| **{digit}** | " + " | ".join(map(str, row)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
