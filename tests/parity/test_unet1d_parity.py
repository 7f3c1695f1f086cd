"""Parity of diffkit's UNet1DModel with diffusers' on tiny random checkpoints.

diffusers builds each config, saves it, diffkit loads it and both run the same inputs. The
grid covers every block type diffusers' UNet1DModel accepts: the Dance Diffusion layout
(Fourier time features as extra input channels), the temporal-convolution planner layout
(positional embedding through an MLP, output conv head) and the value-function layout (value
head, downsampling in every block). The other direction (diffkit saves, diffusers loads) is
covered too.
"""

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffkit_models_unet.unet_1d import UNet1DModel  # noqa: E402

ATOL = 1e-5

DANCE = dict(
    block_out_channels=(32, 32, 64),
    extra_in_channels=16,
    time_embedding_dim=16,
    sample_size=64,
    sample_rate=16000,
    in_channels=2,
    out_channels=2,
)
PLANNER = dict(
    down_block_types=("DownResnetBlock1D", "DownResnetBlock1D", "DownResnetBlock1D"),
    up_block_types=("UpResnetBlock1D", "UpResnetBlock1D"),
    mid_block_type="MidResTemporalBlock1D",
    block_out_channels=(8, 16, 32),
    use_timestep_embedding=True,
    out_block_type="OutConv1DBlock",
    act_fn="mish",
    in_channels=3,
    out_channels=3,
    time_embedding_type="positional",
    flip_sin_to_cos=False,
    freq_shift=1,
    norm_num_groups=8,
)
VALUE = dict(
    PLANNER,
    up_block_types=(),
    mid_block_type="ValueFunctionMidBlock1D",
    out_block_type="ValueFunction",
    downsample_each_block=True,
)

#: (config, sequence length)
CONFIGS = {
    "dance-diffusion": (DANCE, 32),
    "dance-all-attention-default-fourier-width": (
        dict(
            DANCE,
            down_block_types=("DownBlock1DNoSkip", "AttnDownBlock1D", "AttnDownBlock1D"),
            up_block_types=("AttnUpBlock1D", "AttnUpBlock1D", "UpBlock1DNoSkip"),
            block_out_channels=(32, 64, 96),
            time_embedding_dim=None,
            extra_in_channels=64,
            flip_sin_to_cos=False,
            in_channels=1,
            out_channels=1,
        ),
        32,
    ),
    "dance-positional-features": (
        dict(DANCE, time_embedding_type="positional", extra_in_channels=32, time_embedding_dim=None, freq_shift=1.0),
        32,
    ),
    "planner-mish": (PLANNER, 32),
    "planner-two-layers-fourier-swish": (
        dict(PLANNER, layers_per_block=2, time_embedding_type="fourier", flip_sin_to_cos=True, act_fn="swish"),
        32,
    ),
    "planner-no-out-block-mid-downsample-no-norm-groups": (
        dict(
            PLANNER,
            out_block_type=None,
            out_channels=8,
            downsample_each_block=False,
            norm_num_groups=None,
            time_embedding_dim=12,
        ),
        32,
    ),
    "value-function": (VALUE, 32),
    "value-function-single-layer-blocks": (dict(VALUE, block_out_channels=(16, 16, 32), layers_per_block=0), 32),
}


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny models run faster on one thread than split across cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _perturb_norms(model: torch.nn.Module, seed: int) -> None:
    """Give GroupNorms non-trivial affine parameters, so their wiring is tested too."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=gen))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=gen))


def _diffusers_model(config: dict, seed: int = 0):
    torch.manual_seed(seed)
    model = diffusers.UNet1DModel(**config).eval()
    _perturb_norms(model, seed)
    return model


def _sample(config: dict, length: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(2, config.get("in_channels", 2), length, generator=gen)


def _timesteps(config: dict) -> list:
    """Per-sample and shared timesteps; Dance Diffusion's are fractions of the path in [0, 1]."""
    if config.get("out_block_type") == "ValueFunction":
        return [torch.tensor([3, 40])]  # a value head needs one timestep per sample
    if config.get("time_embedding_type", "fourier") == "fourier":
        return [torch.tensor([0.25, 0.9]), torch.tensor(0.6)]
    return [torch.tensor([3.0, 750.0]), torch.tensor(17), 17]


def _assert_same_parameters(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    our_state, their_state = ours.state_dict(), theirs.state_dict()
    assert set(our_state) == set(their_state)
    for key, tensor in their_state.items():
        assert our_state[key].shape == tensor.shape, key


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype
    return (a - b).abs().max().item()


@pytest.mark.parametrize("name", list(CONFIGS))
@torch.no_grad()
def test_diffkit_loads_diffusers_checkpoint_and_matches(tmp_path, name):
    config, length = CONFIGS[name]
    theirs = _diffusers_model(config)
    theirs.save_pretrained(tmp_path)

    ours = UNet1DModel.from_pretrained(tmp_path)
    _assert_same_parameters(ours, theirs)

    sample = _sample(config, length)
    for timestep in _timesteps(config):
        expected = theirs(sample, timestep).sample
        assert torch.isfinite(expected).all()
        got = ours(sample, timestep).sample
        assert _max_diff(got, expected) <= ATOL, timestep


@pytest.mark.parametrize("name", ["dance-diffusion", "planner-mish", "value-function"])
@torch.no_grad()
def test_diffusers_loads_diffkit_checkpoint_and_matches(tmp_path, name):
    config, length = CONFIGS[name]
    torch.manual_seed(1)
    ours = UNet1DModel(**config).eval()
    _perturb_norms(ours, 1)
    ours.save_pretrained(tmp_path)

    theirs = diffusers.UNet1DModel.from_pretrained(tmp_path).eval()
    _assert_same_parameters(ours, theirs)
    for key, value in ours.config.model_dump().items():
        loaded = theirs.config[key]
        assert (list(loaded) if isinstance(loaded, (list, tuple)) else loaded) == (
            list(value) if isinstance(value, tuple) else value
        ), key
    sample = _sample(config, length, seed=1)
    timestep = _timesteps(config)[0]
    assert _max_diff(ours(sample, timestep).sample, theirs(sample, timestep).sample) <= ATOL
