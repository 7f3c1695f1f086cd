"""Parity of diffkit's UNet2DModel with diffusers' on tiny random checkpoints.

diffusers builds each config, saves it, diffkit loads it and both run the same inputs; the
grid exercises every block type and every config option of diffusers' UNet2DModel. The other
direction (diffkit saves, diffusers loads) and checkpoints with the pre-0.15 attention
parameter names are covered too.
"""

import math

import pytest
import torch
from safetensors.torch import save_file

diffusers = pytest.importorskip("diffusers")

from diffkit_models_unet.unet_2d import UNet2DModel  # noqa: E402

ATOL = 1e-5

PLAIN = dict(
    sample_size=16,
    block_out_channels=(16, 32),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=1,
    norm_num_groups=8,
    attention_head_dim=8,
)
SKIP = dict(
    sample_size=16,
    block_out_channels=(32, 64),
    down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D"),
    up_block_types=("AttnSkipUpBlock2D", "SkipUpBlock2D"),
    layers_per_block=1,
)
THREE_LEVELS = dict(block_out_channels=(16, 32, 32), sample_size=16, norm_num_groups=8, attention_head_dim=8)

CONFIGS = {
    "plain-default-options": PLAIN,
    "ddpm-cifar10-like": dict(
        THREE_LEVELS,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        attention_head_dim=None,
        flip_sin_to_cos=False,
        freq_shift=1,
        downsample_padding=0,
        norm_eps=1e-6,
    ),
    "cd-imagenet64-like": dict(
        THREE_LEVELS,
        down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"),
        layers_per_block=2,
        downsample_type="resnet",
        upsample_type="resnet",
        resnet_time_scale_shift="scale_shift",
        attn_norm_num_groups=4,
        num_class_embeds=10,
        act_fn="mish",
    ),
    "scale-shift-mid-attention-without-norm": dict(PLAIN, resnet_time_scale_shift="scale_shift", layers_per_block=3),
    "no-mid-attention-gelu": dict(PLAIN, add_attention=False, act_fn="gelu"),
    "no-mid-block-relu": dict(PLAIN, mid_block_type=None, act_fn="relu"),
    "mid-scale-factor-time-dim": dict(PLAIN, mid_block_scale_factor=math.sqrt(2.0), time_embedding_dim=40),
    "head-dim-not-dividing-width": dict(PLAIN, attention_head_dim=12),
    "center-input-dropout": dict(PLAIN, center_input_sample=True, dropout=0.1),
    "channels-and-nonsquare": dict(PLAIN, in_channels=1, out_channels=2, sample_size=(16, 8)),
    "learned-time-timestep-class": dict(
        PLAIN, time_embedding_type="learned", num_train_timesteps=100, class_embed_type="timestep"
    ),
    "identity-class": dict(PLAIN, class_embed_type="identity", time_embedding_dim=48),
    "legacy-unetres-names": dict(PLAIN, down_block_types=("UNetResDownBlock2D", "UNetResAttnDownBlock2D")),
    "ncsnpp-fourier": dict(SKIP, time_embedding_type="fourier", mid_block_scale_factor=math.sqrt(2.0)),
    "ncsnpp-no-norm-groups": dict(
        SKIP, time_embedding_type="fourier", norm_num_groups=None, center_input_sample=True, norm_eps=1e-6
    ),
    "ncsnpp-three-levels-swish": dict(
        SKIP,
        block_out_channels=(32, 32, 64),
        down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D", "SkipDownBlock2D"),
        up_block_types=("SkipUpBlock2D", "AttnSkipUpBlock2D", "SkipUpBlock2D"),
        act_fn="swish",
        attention_head_dim=None,
        layers_per_block=2,
    ),
    "skip-and-plain-blocks-mixed": dict(
        PLAIN,
        block_out_channels=(32, 32),
        down_block_types=("SkipDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "SkipUpBlock2D"),
        resnet_time_scale_shift="scale_shift",
    ),
}


#: full-size architectures of published checkpoints: google/ddpm-cifar10-32 (its config.json),
#: openai/diffusers-cd_imagenet64_l2 (diffusers' conversion config), and the layouts of
#: google/ddpm-ema-church-256 (DDPM LSUN) and google/ncsnpp-celebahq-256 (NCSN++)
REAL_ARCHITECTURES = {
    "ddpm-cifar10-32": dict(
        sample_size=32,
        block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        downsample_padding=0,
        flip_sin_to_cos=False,
        freq_shift=1,
        norm_eps=1e-6,
        norm_num_groups=32,
    ),
    "cd-imagenet64": dict(
        sample_size=64,
        layers_per_block=3,
        num_class_embeds=1000,
        block_out_channels=(192, 384, 576, 768),
        attention_head_dim=64,
        down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"),
        resnet_time_scale_shift="scale_shift",
        attn_norm_num_groups=32,
        upsample_type="resnet",
        downsample_type="resnet",
    ),
    "ddpm-church-256": dict(
        sample_size=256,
        block_out_channels=(128, 128, 256, 256, 512, 512),
        down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
        layers_per_block=2,
        downsample_padding=0,
        flip_sin_to_cos=False,
        freq_shift=1,
        norm_eps=1e-6,
        attention_head_dim=None,
    ),
    "ncsnpp-256": dict(
        sample_size=256,
        block_out_channels=(128, 128, 256, 256, 256, 256, 256),
        down_block_types=("SkipDownBlock2D",) * 4 + ("AttnSkipDownBlock2D",) + ("SkipDownBlock2D",) * 2,
        up_block_types=("SkipUpBlock2D",) * 2 + ("AttnSkipUpBlock2D",) + ("SkipUpBlock2D",) * 4,
        layers_per_block=2,
        time_embedding_type="fourier",
        mid_block_scale_factor=math.sqrt(2.0),
        norm_eps=1e-6,
        attention_head_dim=None,
    ),
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
    model = diffusers.UNet2DModel(**config).eval()
    _perturb_norms(model, seed)
    return model


def _inputs(config: dict, seed: int = 0) -> dict:
    """A batch of two samples with timesteps (or noise levels) and class labels the config needs."""
    gen = torch.Generator().manual_seed(seed)
    size = config.get("sample_size", 16)
    height, width = size if isinstance(size, tuple) else (size, size)
    sample = torch.randn(2, config.get("in_channels", 3), height, width, generator=gen)
    kind = config.get("time_embedding_type", "positional")
    if kind == "fourier":
        timestep = torch.tensor([0.3, 5.0])
    elif kind == "learned":
        timestep = torch.tensor([4, 97])
    else:
        timestep = torch.tensor([3.0, 750.0])
    class_labels = None
    if config.get("class_embed_type") == "identity":
        class_labels = torch.randn(2, config["time_embedding_dim"], generator=gen)
    elif config.get("class_embed_type") == "timestep":
        class_labels = torch.tensor([2, 61])
    elif config.get("num_class_embeds"):
        class_labels = torch.tensor([1, 7])
    return dict(sample=sample, timestep=timestep, class_labels=class_labels)


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
    config = CONFIGS[name]
    theirs = _diffusers_model(config)
    theirs.save_pretrained(tmp_path)

    ours = UNet2DModel.from_pretrained(tmp_path)
    _assert_same_parameters(ours, theirs)

    inputs = _inputs(config)
    expected = theirs(**inputs).sample
    assert torch.isfinite(expected).all()
    assert _max_diff(ours(**inputs).sample, expected) <= ATOL


def test_python_scalar_timestep_matches():
    config = CONFIGS["ddpm-cifar10-like"]
    theirs = _diffusers_model(config)
    ours = UNet2DModel(**config).eval()
    ours.load_state_dict(theirs.state_dict())
    sample = _inputs(config)["sample"]
    with torch.no_grad():
        for timestep in (17, torch.tensor(17)):
            assert _max_diff(ours(sample, timestep).sample, theirs(sample, timestep).sample) <= ATOL


@pytest.mark.parametrize(
    "name", ["cd-imagenet64-like", "ncsnpp-fourier", "identity-class", "learned-time-timestep-class"]
)
@torch.no_grad()
def test_diffusers_loads_diffkit_checkpoint_and_matches(tmp_path, name):
    config = CONFIGS[name]
    torch.manual_seed(1)
    ours = UNet2DModel(**config).eval()
    _perturb_norms(ours, 1)
    ours.save_pretrained(tmp_path)

    theirs = diffusers.UNet2DModel.from_pretrained(tmp_path).eval()
    _assert_same_parameters(ours, theirs)
    for key, value in ours.config.model_dump().items():
        loaded = theirs.config[key]
        assert (list(loaded) if isinstance(loaded, (list, tuple)) else loaded) == (
            list(value) if isinstance(value, tuple) else value
        ), key

    inputs = _inputs(config, seed=1)
    assert _max_diff(ours(**inputs).sample, theirs(**inputs).sample) <= ATOL


_NEW_TO_OLD = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}


def _legacy_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, tensor in state.items():
        for new, old in _NEW_TO_OLD.items():
            key = key.replace(new, old)
        renamed[key] = tensor.contiguous()
    return renamed


@pytest.mark.parametrize("name", ["cd-imagenet64-like", "ncsnpp-fourier"])
@torch.no_grad()
def test_legacy_attention_names_load_and_match(tmp_path, name):
    config = CONFIGS[name]
    theirs = _diffusers_model(config, seed=2)
    theirs.save_config(tmp_path)
    legacy = _legacy_state(theirs.state_dict())
    assert sum(".proj_attn." in key for key in legacy) > 0
    assert not any(".to_q." in key or ".to_out.0." in key for key in legacy)
    save_file(legacy, str(tmp_path / "diffusion_pytorch_model.safetensors"))

    ours = UNet2DModel.from_pretrained(tmp_path)
    inputs = _inputs(config, seed=2)
    assert _max_diff(ours(**inputs).sample, theirs(**inputs).sample) <= ATOL


@pytest.mark.parametrize("name", ["cd-imagenet64-like", "ddpm-cifar10-like"])
@torch.no_grad()
def test_bfloat16_matches(tmp_path, name):
    config = CONFIGS[name]
    _diffusers_model(config, seed=3).save_pretrained(tmp_path)
    theirs = diffusers.UNet2DModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16).eval()
    ours = UNet2DModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    inputs = _inputs(config, seed=3)
    inputs["sample"] = inputs["sample"].to(torch.bfloat16)
    expected = theirs(**inputs).sample
    assert _max_diff(ours(**inputs).sample, expected) <= 1e-2 * expected.abs().max().item()


@pytest.mark.parametrize("name", list(REAL_ARCHITECTURES))
def test_published_architectures_have_the_diffusers_state_dict_layout(name):
    config = REAL_ARCHITECTURES[name]
    with torch.device("meta"):
        theirs = diffusers.UNet2DModel(**config)
        ours = UNet2DModel(**config)
    _assert_same_parameters(ours, theirs)
