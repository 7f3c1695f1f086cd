"""Config: the diffusers JSON layout, unknown keys kept, bad values named."""

from __future__ import annotations

import json
import logging
from typing import Literal

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffkit.config import Config, Configurable, read_json
from diffkit.errors import CheckpointError, ConfigError


class ToyConfig(Config):
    owner_name = "ToyScheduler"
    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    clip_sample: bool = True
    trained_betas: list[float] | None = None
    block_types: tuple[str, ...] = ("Down", "Up")


class ToyScheduler(Configurable):
    config_class = ToyConfig
    config_name = "scheduler_config.json"

    def __init__(self, config=None, **kwargs):
        self._init_config(config, kwargs)


class OtherConfig(Config):
    owner_name = "OtherScheduler"
    num_train_timesteps: int = 1000
    beta_schedule: Literal["linear", "scaled_linear"] = "scaled_linear"
    skip_prk_steps: bool = False


class OtherScheduler(Configurable):
    config_class = OtherConfig
    config_name = "scheduler_config.json"

    def __init__(self, config=None, **kwargs):
        self._init_config(config, kwargs)


DIFFUSERS_STYLE = {
    "_class_name": "ToyScheduler",
    "_diffusers_version": "0.21.0",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "trained_betas": None,
    "skip_prk_steps": True,  # a foreign key, as real SD configs carry
    "set_alpha_to_one": False,
}


def test_round_trip_keeps_extra_keys_and_metadata(tmp_path, caplog):
    (tmp_path / "scheduler_config.json").write_text(json.dumps(DIFFUSERS_STYLE))
    with caplog.at_level(logging.WARNING, logger="diffkit.config"):
        config = ToyConfig.from_file(tmp_path / "scheduler_config.json")
    assert config.beta_schedule == "scaled_linear" and config["skip_prk_steps"] is True
    assert config.extras == {"skip_prk_steps": True, "set_alpha_to_one": False}
    assert "set_alpha_to_one, skip_prk_steps" in caplog.text

    scheduler = ToyScheduler(config)
    scheduler.save_config(tmp_path / "out")
    written = read_json(tmp_path / "out" / "scheduler_config.json")
    assert written["_diffusers_version"] == "0.21.0"
    assert written["_class_name"] == "ToyScheduler"
    assert {k: written[k] for k in DIFFUSERS_STYLE if not k.startswith("_")} == {
        k: v for k, v in DIFFUSERS_STYLE.items() if not k.startswith("_")
    }
    text = (tmp_path / "out" / "scheduler_config.json").read_text()
    assert text.endswith("}\n") and text == json.dumps(written, indent=2, sort_keys=True) + "\n"
    again = ToyConfig.from_file(tmp_path / "out" / "scheduler_config.json")
    assert again == ToyConfig.from_dict(written)
    assert again.to_dict() == written


def test_unknown_keys_are_reported_once(caplog):
    with caplog.at_level(logging.WARNING, logger="diffkit.config"):
        ToyConfig.from_dict({"made_up_key_xyz": 1})
        ToyConfig.from_dict({"made_up_key_xyz": 2})
    assert caplog.text.count("made_up_key_xyz") == 1


def test_invalid_value_names_file_field_value_and_allowed_values():
    with pytest.raises(ConfigError) as err:
        ToyConfig.from_dict({"beta_schedule": "cosine"}, source="unet/scheduler_config.json")
    message = str(err.value)
    assert "unet/scheduler_config.json" in message
    assert "'beta_schedule'" in message and "'cosine'" in message
    assert "'linear'" in message and "'squaredcos_cap_v2'" in message


def test_wrong_type_names_the_field():
    with pytest.raises(ConfigError, match="num_train_timesteps.*'many'"):
        ToyConfig.from_dict({"num_train_timesteps": "many"})


def test_non_object_json_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"config.json must hold a JSON object"):
        read_json(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match=r"config.json is not valid JSON \(line 1"):
        read_json(tmp_path / "config.json")


def test_configs_are_immutable_and_replace_validates():
    config = ToyConfig.from_dict({})
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.beta_start = 0.5  # type: ignore[misc]
    assert config.replace(beta_start=0.5).beta_start == 0.5
    with pytest.raises(ConfigError):
        config.replace(beta_schedule="nope")


def test_from_config_swap_keeps_foreign_keys_and_does_not_leak_defaults():
    other = OtherScheduler(skip_prk_steps=True, num_train_timesteps=500)
    toy = ToyScheduler.from_config(other.config)
    assert toy.config.num_train_timesteps == 500  # given explicitly: carried over
    assert toy.config.beta_schedule == "linear"  # OtherScheduler's *default* is not imposed
    assert toy.config["skip_prk_steps"] is True  # kept for the way back
    back = OtherScheduler.from_config(toy.config)
    assert back.config.skip_prk_steps is True and back.config.num_train_timesteps == 500
    assert ToyScheduler.from_config(other.config, clip_sample=False).config.clip_sample is False


field_values = st.fixed_dictionaries(
    {
        "num_train_timesteps": st.integers(1, 10_000),
        "beta_start": st.floats(1e-6, 0.1, allow_nan=False),
        "beta_schedule": st.sampled_from(["linear", "scaled_linear", "squaredcos_cap_v2"]),
        "clip_sample": st.booleans(),
        "trained_betas": st.none() | st.lists(st.floats(0, 1, allow_nan=False), max_size=5),
        "block_types": st.lists(st.sampled_from(["Down", "Attn", "Up"]), max_size=4).map(tuple),
    },
    optional={"some_foreign_key": st.integers() | st.text(max_size=5) | st.booleans()},
)


@settings(max_examples=60, deadline=None)
@given(values=field_values)
def test_round_trip_over_field_values(values, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cfg")
    scheduler = ToyScheduler(ToyConfig.from_dict(values))
    scheduler.save_config(folder)
    reread = ToyConfig.from_file(folder / "scheduler_config.json")
    assert reread == scheduler.config.__class__.from_dict(scheduler.config_dict())
    for key, value in values.items():
        assert reread[key] == value


@settings(max_examples=40, deadline=None)
@given(bad=st.text(min_size=1, max_size=12).filter(lambda s: s not in ("linear", "scaled_linear", "squaredcos_cap_v2")))
def test_any_unknown_schedule_is_rejected(bad):
    with pytest.raises(ConfigError, match="beta_schedule"):
        ToyConfig.from_dict({"beta_schedule": bad})
