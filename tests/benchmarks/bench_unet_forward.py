"""Benchmark: one forward of a small SD-layout UNet2DConditionModel on the CPU, float32, diffkit vs diffusers.

The checkpoint (random weights, saved by diffusers) has SD1.5's block layout at a small width:
CrossAttnDownBlock2D x3 + DownBlock2D, two resnets per block, 8 heads, a 77-token text
context; the input is one classifier-free-guidance step (batch 2). Both models run in this
process under inference mode with one torch thread, the libraries interleaved repeat by
repeat (CPU time of the thread by default); outputs are checked against each other first.
Cases: eager, and with fused QKV projections on both sides.

Run: python tests/benchmarks/bench_unet_forward.py [--repeats 7] [--forwards 3] [--clock cpu] [--tiny]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import interleave, parser, print_ratio, print_setup, ratio, set_torch_threads, timed, write_json  # noqa: E402

SMALL_SD = dict(
    sample_size=32, block_out_channels=(32, 64, 64, 64), layers_per_block=2, norm_num_groups=32,
    cross_attention_dim=64, attention_head_dim=8,
)
TINY_SD = dict(
    sample_size=16, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, cross_attention_dim=32,
    attention_head_dim=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
)


def main() -> None:
    p = parser(__doc__, repeats=7, warmup=1)
    p.add_argument("--forwards", type=int, default=3, help="forwards per timed repeat (default 3)")
    args = p.parse_args()
    config = TINY_SD if args.tiny else SMALL_SD
    if args.tiny:
        args.repeats, args.forwards = 2, 1
    set_torch_threads(args.clock, 1)

    import diffusers
    import torch

    from diffkit import registry

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        diffusers.UNet2DConditionModel(**config).save_pretrained(Path(tmp) / "unet")
        theirs = diffusers.UNet2DConditionModel.from_pretrained(Path(tmp) / "unet").eval()
        ours = registry.get("model", "UNet2DConditionModel").from_pretrained(Path(tmp) / "unet").eval()

    g = torch.Generator().manual_seed(0)
    size = config["sample_size"]
    sample = torch.randn(2, 4, size, size, generator=g)
    context = torch.randn(2, 77, config["cross_attention_dim"], generator=g)
    timestep = torch.tensor(500)

    def forward(model):
        def run():
            with torch.inference_mode():
                return model(sample, timestep, context, return_dict=False)[0]

        return run

    difference = (forward(ours)() - forward(theirs)()).abs().max().item()
    print_setup(f"UNet2DConditionModel forward, float32, batch 2, {size}x{size} latents, "
                f"widths {config['block_out_channels']}; max |diffkit - diffusers| = {difference:.2e}", args)

    results = {}
    for case in ("eager", "fused QKV"):
        if case == "fused QKV":
            ours.fuse_qkv_projections()
            theirs.fuse_qkv_projections()
        series = interleave(
            {"diffkit": timed(forward(ours), args.clock, args.forwards),
             "diffusers": timed(forward(theirs), args.clock, args.forwards)},
            args.repeats, args.warmup,
        )
        ours_fig, theirs_fig = series["diffkit"]["seconds"], series["diffusers"]["seconds"]
        results[case] = ratio(ours_fig, theirs_fig)
        print(f"  {case:<10} diffkit   {ours_fig.text(1000, 'ms')}")
        print(f"  {case:<10} diffusers {theirs_fig.text(1000, 'ms')}   ratio {results[case]:.2f}")
        write_json(args, {f"{case} diffkit": ours_fig, f"{case} diffusers": theirs_fig})
    print_ratio(results["eager"], "UNet2DConditionModel forward, float32 CPU", f"fused QKV {results['fused QKV']:.2f}x")


if __name__ == "__main__":
    main()
