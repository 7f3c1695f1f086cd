"""Hostile inputs and faults (issue 13): data safety, trust, plugin isolation and clean errors.

One test per case. Checkpoints are a tiny DDPM (UNet with 8/16 channels, 8 px) that diffkit
builds and saves itself; plugins are fake distributions written into a temporary ``site``
folder and put on ``sys.path``, so the registry finds them through real entry points.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffkit import CheckpointError, DiffusionPipeline, registry
from diffkit.errors import ConfigError, DuplicateNameError, PluginError, RemoteCodeError
from diffkit_models_unet.unet_2d import UNet2DModel
from diffkit_pipeline_ddpm.pipeline import DDPMPipeline
from diffkit_scheduler_ddpm.ddpm import DDPMScheduler

TINY_UNET = dict(
    sample_size=8,
    block_out_channels=(8, 16),
    layers_per_block=1,
    norm_num_groups=4,
    down_block_types=("DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D"),
)
WEIGHTS = "diffusion_pytorch_model.safetensors"
ANSI = "\x1b["


def make_pipe(seed: int = 0) -> DDPMPipeline:
    torch.manual_seed(seed)
    pipe = DDPMPipeline(unet=UNet2DModel(**TINY_UNET).eval(), scheduler=DDPMScheduler(num_train_timesteps=50))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def ddpm_dir(tmp_path: Path) -> Path:
    path = tmp_path / "ddpm"
    make_pipe().save_pretrained(path)
    return path


def load(path: Path | str, **kwargs) -> DDPMPipeline:
    pipe = DiffusionPipeline.from_pretrained(path, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def first_weight(pipe: DDPMPipeline) -> torch.Tensor:
    return pipe.unet.conv_in.weight.detach().clone()


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders a save left in or beside ``folder``."""
    inside = [p.name for p in folder.rglob(".*")] if folder.is_dir() else []
    beside = [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]
    return sorted(inside + beside)


# -- 1. saving never deletes what it did not write --------------------------------------------
def test_save_keeps_the_other_files_of_the_folder(tmp_path):
    folder = tmp_path / "project"
    (folder / ".git").mkdir(parents=True)
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "README.md").write_text("my notes\n")
    (folder / "other_model").mkdir()
    (folder / "other_model" / "weights.bin").write_bytes(b"\x00" * 8)
    (folder / "unet").mkdir()
    (folder / "unet" / "NOTES.txt").write_text("unet notes\n")
    pipe = make_pipe()
    pipe.save_pretrained(folder)
    pipe.save_pretrained(folder)  # over an existing checkpoint too
    assert (folder / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"
    assert (folder / "README.md").read_text() == "my notes\n"
    assert (folder / "other_model" / "weights.bin").read_bytes() == b"\x00" * 8
    assert (folder / "unet" / "NOTES.txt").read_text() == "unet notes\n"
    assert torch.equal(first_weight(load(folder)), first_weight(pipe))
    pipe.unet.save_pretrained(folder / "other_model")
    assert (folder / "other_model" / "weights.bin").exists()


def test_resave_removes_only_the_stale_shards_of_the_weights_it_wrote(tmp_path):
    """Sharded, then one file: the old index and shards go (else they would shadow the new file); the rest stays."""
    folder = tmp_path / "unet"
    unet = make_pipe(seed=0).unet
    unet.save_pretrained(folder, max_shard_size=20_000)
    unet.save_pretrained(folder, variant="fp16")
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"kept")
    assert (folder / "diffusion_pytorch_model.safetensors.index.json").exists()
    other = make_pipe(seed=1).unet
    other.save_pretrained(folder)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["config.json", "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.safetensors",
                     "diffusion_pytorch_model.safetensors"], names
    assert torch.equal(UNet2DModel.from_pretrained(folder).conv_in.weight, other.conv_in.weight)


def test_save_into_the_current_directory(tmp_path, monkeypatch):
    folder = tmp_path / "here"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    monkeypatch.chdir(folder)
    pipe = make_pipe()
    pipe.save_pretrained(".")
    pipe.save_pretrained(".")
    assert (folder / "keep.txt").read_text() == "x"
    assert torch.equal(first_weight(load(folder)), first_weight(pipe))
    assert leftovers(folder) == []


def test_save_that_fails_leaves_the_old_checkpoint_and_no_leftovers(ddpm_dir, monkeypatch):
    import diffkit.config

    old = first_weight(load(ddpm_dir))
    calls = []

    def explode(path, data):
        calls.append(path)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(diffkit.config, "write_json", explode)
    with pytest.raises(OSError):
        make_pipe(seed=1).save_pretrained(ddpm_dir)
    assert calls
    monkeypatch.undo()
    assert torch.equal(first_weight(load(ddpm_dir)), old)
    assert leftovers(ddpm_dir) == []


# -- 2. SIGKILL at random points --------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks a saver per trial")
def test_sigkill_during_save_always_leaves_a_loadable_checkpoint(tmp_path):
    """20 forked savers killed at random moments: the path always loads (old or new weights)."""
    path = tmp_path / "ckpt"
    pipes = [make_pipe(seed=0), make_pipe(seed=1)]
    expected = [first_weight(p) for p in pipes]
    started = time.perf_counter()
    pipes[1].save_pretrained(path)
    timed = time.perf_counter()
    pipes[0].save_pretrained(path)
    one_save = time.perf_counter() - timed
    rng = random.Random(13)
    for trial in range(20):
        pid = os.fork()
        if pid == 0:  # the child saves the two pipelines in turn until it is killed
            try:
                for i in range(10_000):
                    pipes[(trial + i + 1) % 2].save_pretrained(path)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0, 3 * one_save))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        loaded = first_weight(load(path))
        assert any(torch.equal(loaded, w) for w in expected), f"trial {trial}: weights are neither old nor new"
        assert leftovers(path) == [], f"trial {trial}: the load did not clean up after the killed save"
    assert time.perf_counter() - started < 60


# -- 3. custom_pipeline files go through the gate ---------------------------------------------
def test_custom_pipeline_file_needs_trust_remote_code(ddpm_dir, tmp_path):
    marker = tmp_path / "ran"
    code = tmp_path / "my_pipeline.py"
    code.write_text(textwrap.dedent(f"""
        from pathlib import Path
        from diffkit_pipeline_ddpm.pipeline import DDPMPipeline
        Path({str(marker)!r}).write_text("ran")

        class HostileProbePipeline(DDPMPipeline):
            pass
    """))
    with pytest.raises(RemoteCodeError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(ddpm_dir, custom_pipeline=str(code))
    assert not marker.exists()
    pipe = DiffusionPipeline.from_pretrained(ddpm_dir, custom_pipeline=str(code), trust_remote_code=True)
    assert type(pipe).__name__ == "HostileProbePipeline" and marker.exists()


# -- 4. symlinks out of the checkpoint --------------------------------------------------------
def _move_out(path: Path, outside: Path) -> None:
    outside.parent.mkdir(parents=True, exist_ok=True)
    path.rename(outside)
    path.symlink_to(outside)


def test_config_linked_from_outside_is_refused(ddpm_dir, tmp_path):
    _move_out(ddpm_dir / "unet" / "config.json", tmp_path / "elsewhere" / "config.json")
    with pytest.raises(CheckpointError, match=r"config\.json.*outside|outside.*config\.json"):
        load(ddpm_dir)
    scheduler_config = ddpm_dir / "scheduler" / "scheduler_config.json"
    _move_out(scheduler_config, tmp_path / "elsewhere" / "scheduler_config.json")
    with pytest.raises(CheckpointError, match="outside"):
        DDPMScheduler.from_pretrained(scheduler_config.parent)
    allowed = DDPMScheduler.from_pretrained(scheduler_config.parent, allow_external_symlinks=True)
    assert allowed.config.num_train_timesteps == 50


def test_weights_linked_from_outside_are_refused(ddpm_dir, tmp_path):
    _move_out(ddpm_dir / "unet" / WEIGHTS, tmp_path / "elsewhere" / WEIGHTS)
    with pytest.raises(CheckpointError, match="outside"):
        load(ddpm_dir)
    with pytest.raises(CheckpointError, match="outside"):
        UNet2DModel.from_pretrained(ddpm_dir / "unet")


def test_component_folder_linked_from_outside_is_refused_unless_allowed(ddpm_dir, tmp_path):
    _move_out(ddpm_dir / "unet", tmp_path / "elsewhere" / "unet")
    with pytest.raises(CheckpointError, match="allow_external_symlinks"):
        load(ddpm_dir)
    assert first_weight(load(ddpm_dir, allow_external_symlinks=True)).shape[0] == 8
    with pytest.raises(CheckpointError, match="outside"):
        UNet2DModel.from_pretrained(ddpm_dir, subfolder="unet")


def test_hub_cache_layout_links_into_blobs_keep_working(ddpm_dir, tmp_path):
    """A snapshot whose files link into the repo's ``blobs/`` loads; a link elsewhere does not."""
    repo = tmp_path / "hub" / "models--org--tiny"
    snapshot = repo / "snapshots" / ("a" * 40)
    for i, file in enumerate(sorted(p for p in ddpm_dir.rglob("*") if p.is_file())):
        blob = repo / "blobs" / f"{i:064x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(file.read_bytes())
        link = snapshot / file.relative_to(ddpm_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    assert torch.equal(first_weight(load(snapshot)), first_weight(load(ddpm_dir)))
    assert UNet2DModel.from_pretrained(snapshot, subfolder="unet").conv_in.weight.shape[0] == 8
    other = tmp_path / "hub" / "models--org--other" / "blobs" / "x"
    _move_out(snapshot / "unet" / "config.json", other)
    with pytest.raises(CheckpointError, match="outside"):
        load(snapshot)


# -- 5. non-finite weights and images ---------------------------------------------------------
def _poison(folder: Path, key: str) -> None:
    state = load_file(str(folder / WEIGHTS))
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})


def test_non_finite_weights_warn_naming_component_and_tensor(ddpm_dir, caplog, monkeypatch):
    _poison(ddpm_dir / "unet", "conv_out.weight")
    with caplog.at_level(logging.WARNING, logger="diffkit"):
        load(ddpm_dir)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "'unet'" in text and "conv_out.weight" in text and "DIFFKIT_CHECK_WEIGHTS" in text
    caplog.clear()
    monkeypatch.setenv("DIFFKIT_CHECK_WEIGHTS", "0")
    with caplog.at_level(logging.WARNING, logger="diffkit"):
        load(ddpm_dir)
    assert not [r for r in caplog.records if "non-finite" in r.getMessage()]


def test_non_finite_images_warn_once_per_call(ddpm_dir, caplog, monkeypatch):
    _poison(ddpm_dir / "unet", "conv_out.weight")
    monkeypatch.setenv("DIFFKIT_CHECK_WEIGHTS", "0")
    pipe = load(ddpm_dir)
    with caplog.at_level(logging.WARNING, logger="diffkit"):
        for _ in range(2):
            pipe(batch_size=2, num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0))
    hits = [r for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(hits) == 2, [r.getMessage() for r in caplog.records]


# -- 6. plugin isolation ----------------------------------------------------------------------
def _fake_dist(site: Path, dist: str, hooks: str) -> None:
    module = dist.replace("-", "_") + "_hooks"
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[diffkit]\n{dist} = {module}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(hooks))


@pytest.fixture
def site(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("DIFFKIT_STRICT_PLUGINS", "0")
    return folder


def _plugins_cli() -> str:
    import contextlib
    import io

    from diffkit.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        main(["plugins"])
    return out.getvalue()


def test_plugin_calling_sys_exit_at_import_is_recorded(site, ddpm_dir, monkeypatch):
    _fake_dist(site, "hostile-exit", "import sys\nsys.exit(3)\n")
    with registry.isolated(autoload=True):
        assert torch.equal(first_weight(load(ddpm_dir)), first_weight(make_pipe()))
        info = registry.plugin("hostile-exit")
        assert info is not None and info.status == "failed" and "SystemExit" in info.error
        assert "hostile-exit" in _plugins_cli() and "SystemExit" in _plugins_cli()
    monkeypatch.setenv("DIFFKIT_STRICT_PLUGINS", "1")
    with registry.isolated(autoload=True), pytest.raises(PluginError, match="hostile-exit"):
        registry.plugins()


def test_raising_pipeline_loaded_hook_is_recorded(site, ddpm_dir, monkeypatch):
    _fake_dist(site, "hostile-hook", """
        from diffkit.hookspecs import hookimpl

        @hookimpl
        def pipeline_loaded(pipeline, source):
            raise RuntimeError("hook exploded")
    """)
    with registry.isolated(autoload=True):
        load(ddpm_dir)
        load(ddpm_dir)
        assert "hook exploded" in _plugins_cli()
    monkeypatch.setenv("DIFFKIT_STRICT_PLUGINS", "1")
    with registry.isolated(autoload=True), pytest.raises(PluginError, match="hook exploded"):
        load(ddpm_dir)


def test_third_party_plugin_cannot_knock_out_a_first_party_name(site, ddpm_dir, monkeypatch):
    _fake_dist(site, "hostile-shadow", """
        from diffkit.hookspecs import hookimpl

        @hookimpl
        def register_models(register):
            register("UNet2DModel", "hostile_shadow_impl:Nothing")
            register("HostileOwnModel", "hostile_shadow_impl:Nothing")
    """)
    (site / "hostile_shadow_impl.py").write_text("Nothing = object\n")
    with registry.isolated(autoload=True):
        assert registry.entry("model", "UNet2DModel").dist == "diffkit-models-unet"
        assert registry.has("model", "HostileOwnModel")
        load(ddpm_dir)
        assert "hostile-shadow: registers model 'UNet2DModel', which first-party diffkit-models-unet" in _plugins_cli()
    monkeypatch.setenv("DIFFKIT_DISABLE_PLUGINS", "diffkit-models-unet")
    with registry.isolated(autoload=True):
        assert registry.entry("model", "UNet2DModel").dist == "hostile-shadow"
    monkeypatch.delenv("DIFFKIT_DISABLE_PLUGINS")
    monkeypatch.setenv("DIFFKIT_STRICT_PLUGINS", "1")
    with registry.isolated(autoload=True), pytest.raises(DuplicateNameError, match="hostile-shadow"):
        registry.names("model")


# -- 7. environment switches ------------------------------------------------------------------
def test_plugin_lists_strip_whitespace(monkeypatch):
    monkeypatch.setenv("DIFFKIT_DISABLE_PLUGINS", "diffkit-attention-sliced, diffkit-offload-model ")
    with registry.isolated(autoload=True):
        assert registry.plugin("diffkit-attention-sliced").status == "disabled"
        assert registry.plugin("diffkit-offload-model").status == "disabled"


def test_unknown_plugin_names_in_the_lists_warn(monkeypatch, caplog):
    monkeypatch.setenv("DIFFKIT_DISABLE_PLUGINS", "diffkit-atention-sliced")
    with caplog.at_level(logging.WARNING, logger="diffkit"), registry.isolated(autoload=True):
        registry.plugins()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "diffkit-atention-sliced" in text and "diffkit-attention-sliced" in text


def test_strict_plugins_off_means_off(site, monkeypatch):
    _fake_dist(site, "hostile-broken", "raise ImportError('broken on purpose')\n")
    for value in ("off", "no", "False", " 0 "):
        monkeypatch.setenv("DIFFKIT_STRICT_PLUGINS", value)
        with registry.isolated(autoload=True):
            assert registry.plugin("hostile-broken").status == "failed"
    monkeypatch.setenv("DIFFKIT_STRICT_PLUGINS", "on")
    with registry.isolated(autoload=True), pytest.raises(PluginError):
        registry.plugins()


# -- ugly errors made clean -------------------------------------------------------------------
def test_json_nested_200000_deep(ddpm_dir):
    (ddpm_dir / "model_index.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(CheckpointError, match="model_index.json"):
        load(ddpm_dir)


def test_num_train_timesteps_1e10_is_refused_without_allocating(ddpm_dir):
    config = ddpm_dir / "scheduler" / "scheduler_config.json"
    data = json.loads(config.read_text())
    data["num_train_timesteps"] = 1e10
    config.write_text(json.dumps(data))
    # the config alone must refuse it: only then is building the scheduler safe to try (no 40 GB allocation)
    with pytest.raises(ConfigError, match=r"scheduler_config\.json.*'num_train_timesteps'.*at most"):
        DDPMScheduler.config_class.from_file(config)
    with pytest.raises(ConfigError, match="num_train_timesteps"):
        DDPMScheduler.from_pretrained(config.parent)
    with pytest.raises(ConfigError, match="num_train_timesteps"):
        load(ddpm_dir)


def test_integer_weights_are_a_clean_error(ddpm_dir):
    state = load_file(str(ddpm_dir / "unet" / WEIGHTS))
    state["conv_in.weight"] = state["conv_in.weight"].to(torch.int32)
    save_file(state, str(ddpm_dir / "unet" / WEIGHTS))
    with pytest.raises(CheckpointError, match=r"conv_in\.weight.*int32"):
        load(ddpm_dir)


def test_integer_torch_dtype_is_a_clean_error(ddpm_dir):
    with pytest.raises((TypeError, ValueError), match="torch_dtype") as caught:
        load(ddpm_dir, torch_dtype=torch.int8)
    assert "require gradients" not in str(caught.value)


def test_legacy_pre_zip_bin_loads_with_the_pickle_opt_in(ddpm_dir):
    unet = ddpm_dir / "unet"
    state = load_file(str(unet / WEIGHTS))
    torch.save(state, str(unet / "diffusion_pytorch_model.bin"), _use_new_zipfile_serialization=False)
    (unet / WEIGHTS).unlink()
    model = UNet2DModel.from_pretrained(unet, use_safetensors=False, allow_pickle=True)
    assert torch.equal(model.conv_in.weight, state["conv_in.weight"])


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_malicious_bin_is_refused_naming_the_file(ddpm_dir):
    unet = ddpm_dir / "unet"
    torch.save({"conv_in.weight": _Evil()}, str(unet / "diffusion_pytorch_model.bin"))
    (unet / WEIGHTS).unlink()
    with pytest.raises(CheckpointError) as caught:
        UNet2DModel.from_pretrained(unet, use_safetensors=False, allow_pickle=True)
    text = str(caught.value)
    assert "diffusion_pytorch_model.bin" in text and "system" in text
    assert "weights_only=False" not in text and ANSI not in text


def test_fractional_num_inference_steps(ddpm_dir):
    pipe = load(ddpm_dir)
    with pytest.raises((TypeError, ValueError), match=r"num_inference_steps.*2\.5"):
        pipe(num_inference_steps=2.5, output_type="np")


def test_integer_generator(ddpm_dir):
    pipe = load(ddpm_dir)
    with pytest.raises(TypeError, match=r"torch\.Generator\(\)\.manual_seed\(42\)"):
        pipe(num_inference_steps=2, generator=42, output_type="np")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_to_cuda_without_cuda(ddpm_dir):
    pipe = load(ddpm_dir)
    with pytest.raises(RuntimeError, match="CUDA") as caught:
        pipe.to("cuda")
    assert "not compiled" not in str(caught.value) or "cpu" in str(caught.value)
    assert pipe.device.type == "cpu"


def test_write_failing_half_way_names_the_file(ddpm_dir, monkeypatch):
    import safetensors.torch

    def half_write(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 16)
        raise OSError(28, "No space left on device")

    old = first_weight(load(ddpm_dir))
    monkeypatch.setattr(safetensors.torch, "save_file", half_write)
    with pytest.raises(OSError) as caught:
        make_pipe(seed=1).save_pretrained(ddpm_dir)
    assert WEIGHTS in str(caught.value) and "unet" in str(caught.value)
    monkeypatch.undo()
    assert torch.equal(first_weight(load(ddpm_dir)), old)


def test_disabled_pretrained_plugin_says_it_is_disabled(monkeypatch):
    monkeypatch.setenv("DIFFKIT_DISABLE_PLUGINS", "diffkit-pretrained-ddpm-digits")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with registry.isolated(autoload=True), pytest.raises(CheckpointError) as caught:
        DiffusionPipeline.from_pretrained("diffkit/ddpm-digits")
    assert "disabled" in str(caught.value) and "DIFFKIT_DISABLE_PLUGINS" in str(caught.value)
