"""Regional compilation (``pipe.compile``/``Model.compile``): one graph per block shape, no graph
breaks, no recompilation across steps, schedulers or DeepCache's partial steps.

dynamo's own counters are read through a whole tiny SD call (UNet and VAE blocks compiled).
The ``eager`` backend runs dynamo's capture without inductor's C++ build: what is proven here
(what dynamo captures, how often, where it breaks) does not depend on the backend.
"""

from __future__ import annotations

import pytest
import torch

from tiny_speed_pipelines import swap_scheduler, tiny_sd

pytest.importorskip("transformers")
dynamo = pytest.importorskip("torch._dynamo")
from torch._dynamo.utils import counters  # noqa: E402


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _describe(value):
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.stride(), value.dtype)  # dynamo specialises on strides too
    if isinstance(value, (tuple, list)):
        return tuple(_describe(v) for v in value)
    return ("value", type(value).__name__, value if value is None or isinstance(value, (bool, int, str)) else None)


def block_signatures(pipe, run) -> set:
    """The distinct (class, inputs, parameter shapes) of the blocks regional compilation compiles, seen in ``run()``."""
    seen = set()
    handles = []
    for name in ("unet", "vae"):
        for block in getattr(pipe, name).repeated_block_modules():
            params = tuple(tuple(p.shape) for p in block.parameters())

            def record(module, args, kwargs, params=params):
                seen.add((type(module).__name__, _describe(args), _describe(sorted(kwargs.items())), params))

            handles.append(block.register_forward_pre_hook(record, with_kwargs=True))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen


def _call(pipe, steps=2):
    return pipe("a digit", num_inference_steps=steps, height=32, width=32, output_type="pt",
                generator=torch.Generator().manual_seed(0)).images


def test_sd_call_compiles_each_block_shape_once_without_graph_breaks(tmp_path):
    pipe = tiny_sd(tmp_path)
    eager = []
    signatures = block_signatures(pipe, lambda: eager.append(_call(pipe)))
    dynamo.reset()
    counters.clear()
    try:
        assert pipe.compile(backend="eager") is pipe
        compiled_ddim = _call(pipe)
        graphs = counters["stats"]["unique_graphs"]
        assert graphs == len(signatures)
        swap_scheduler(pipe, "EulerDiscreteScheduler")  # float sigmas-based timesteps, scaled inputs
        compiled_euler = _call(pipe, steps=3)
        pipe.enable_step_cache("deepcache", interval=2)  # partial steps skip blocks, shapes stay
        _call(pipe, steps=3)
        pipe.disable_step_cache()
        assert counters["stats"]["unique_graphs"] == graphs
        assert sum(counters["graph_break"].values()) == 0
    finally:
        dynamo.reset()
    assert (compiled_ddim - eager[0]).abs().max() <= 1e-5
    assert compiled_euler.shape == compiled_ddim.shape and torch.isfinite(compiled_euler).all()


def test_compile_options_and_errors(tmp_path):
    pipe = tiny_sd(tmp_path)
    with pytest.raises(ValueError, match="not model components.*unet"):
        pipe.compile(components=["text_encoder"])
    from diffkit import registry

    ddpm_unet = registry.get("model", "UNet2DModel")(
        sample_size=8, block_out_channels=(4, 8), norm_num_groups=2, layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    with pytest.raises(ValueError, match="regional=False"):
        ddpm_unet.compile()
    dynamo.reset()
    try:
        ddpm_unet.compile(backend="eager", regional=False)  # the whole forward as one graph
        counters.clear()
        with torch.no_grad():
            out = ddpm_unet(torch.randn(1, 3, 8, 8), torch.tensor(5)).sample
        assert out.shape == (1, 3, 8, 8) and counters["stats"]["unique_graphs"] == 1
    finally:
        dynamo.reset()
