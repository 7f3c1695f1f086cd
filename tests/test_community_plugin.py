"""The community-plugin example, installed with pip, works like any third-party package.

``docs/examples/community-plugin`` is built and installed by pip (``--target`` a temporary
folder put on ``sys.path`` and ``PYTHONPATH``: offline, no build isolation, and the shared
virtualenv is left exactly as it was even if a test dies). Then: ``diffkit plugins`` lists it,
a checkpoint whose ``model_index.json`` names its pipeline loads through the registry, and
``custom_pipeline="DDIMTwistPipeline"`` picks it by name. A community package that fails to
import does not stop other checkpoints from loading.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from diffkit import DiffusionPipeline, PluginError, registry

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "community-plugin"
DIST = "diffkit-community-ddim-twist"
PACKAGE = "diffkit_community_ddim_twist"
TINY_UNET = dict(
    sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=4,
)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The example installed by pip into a fresh folder (the wheel is built by hatchling, offline)."""
    target = tmp_path_factory.mktemp("community-site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--target", str(target), str(EXAMPLE)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"pip install failed (is hatchling installed? see requirements-test.txt):\n{proc.stderr}"
    assert (target / PACKAGE / "hooks.py").is_file()
    assert any(p.name.startswith(f"{PACKAGE}-0.1.0") and p.suffix == ".dist-info" for p in target.iterdir())
    return target


@pytest.fixture
def installed(site, monkeypatch):
    """The installed example visible to this process and its subprocesses; the registry reloads."""
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    with registry.isolated(autoload=True) as fresh:
        yield fresh
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def ddim_checkpoint(tmp_path_factory) -> Path:
    """A tiny DDIM checkpoint (UNet2DModel + DDIMScheduler), saved by the first-party plugins."""
    from diffkit_models_unet.unet_2d import UNet2DModel
    from diffkit_pipeline_ddim.pipeline import DDIMPipeline
    from diffkit_scheduler_ddim.ddim import DDIMScheduler

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ddim") / "checkpoint"
    DDIMPipeline(unet=UNet2DModel(**TINY_UNET), scheduler=DDIMScheduler(num_train_timesteps=100)).save_pretrained(folder)
    return folder


def run(pipe) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=3, output_type="np").images


def test_diffkit_plugins_lists_the_installed_package(installed):
    proc = subprocess.run([sys.executable, "-m", "diffkit", "plugins", "--json"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "DIFFKIT_STRICT_PLUGINS": "1"})
    assert proc.returncode == 0, proc.stderr
    (entry,) = [p for p in json.loads(proc.stdout) if p["dist"] == DIST]
    assert entry["status"] == "loaded" and entry["error"] is None and entry["version"] == "0.1.0"
    assert entry["hook_module"] == f"{PACKAGE}.hooks"
    assert entry["provides"] == {"pipeline": ["DDIMTwistPipeline"]}
    table = subprocess.run([sys.executable, "-m", "diffkit", "plugins"], capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    assert any(line.split()[:3] == [DIST, "0.1.0", "loaded"] and "DDIMTwistPipeline" in line
               for line in table.stdout.splitlines())


def test_checkpoint_naming_the_community_pipeline_loads_and_runs(installed, site, ddim_checkpoint, tmp_path):
    info = installed.plugin(DIST)
    assert info is not None and info.status == "loaded"
    assert installed.entry("pipeline", "DDIMTwistPipeline").dist == DIST
    # The same weights, with a model_index.json that names the community pipeline.
    folder = tmp_path / "twist"
    shutil.copytree(ddim_checkpoint, folder)
    index = json.loads((ddim_checkpoint / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "DDIMTwistPipeline", "symmetry": 1.0}))

    pipe = DiffusionPipeline.from_pretrained(folder)
    cls = type(pipe)
    assert cls.__name__ == "DDIMTwistPipeline"
    assert Path(sys.modules[cls.__module__].__file__).is_relative_to(site)  # imported from the installed copy
    images = run(pipe)
    assert np.array_equal(images, images[:, :, ::-1])  # the plugin's twist: mirror-symmetric images
    plain = run(DiffusionPipeline.from_pretrained(ddim_checkpoint))
    assert type(DiffusionPipeline.from_pretrained(ddim_checkpoint)).__name__ == "DDIMPipeline"
    assert not np.array_equal(plain, plain[:, :, ::-1])

    by_name = DiffusionPipeline.from_pretrained(ddim_checkpoint, custom_pipeline="DDIMTwistPipeline")
    assert type(by_name) is cls
    np.testing.assert_array_equal(run(by_name), images)


@pytest.mark.slow
def test_example_own_tests_pass_against_the_installed_package(installed):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "tests"], cwd=EXAMPLE,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


# -- a broken community package --------------------------------------------------------------
@pytest.fixture
def broken_site(tmp_path, monkeypatch) -> Path:
    """An installed community distribution whose hook module raises at import."""
    site = tmp_path / "broken-site"
    info = site / "diffkit_community_broken-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: diffkit-community-broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[diffkit]\ncommunity-broken = diffkit_community_broken_hooks\n")
    (site / "diffkit_community_broken_hooks.py").write_text(textwrap.dedent("""
        raise ImportError("No module named 'some_missing_dependency'")
    """))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("DIFFKIT_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("DIFFKIT_DISABLE_PLUGINS", raising=False)
    return site


def test_broken_community_package_does_not_break_other_checkpoints(broken_site, ddim_checkpoint, monkeypatch):
    monkeypatch.setenv("DIFFKIT_STRICT_PLUGINS", "0")
    with registry.isolated(autoload=True):
        pipe = DiffusionPipeline.from_pretrained(ddim_checkpoint)
        assert type(pipe).__name__ == "DDIMPipeline" and run(pipe).shape == (2, 8, 8, 3)
        broken = registry.plugin("diffkit-community-broken")
        assert broken is not None and broken.status == "failed"
        assert "some_missing_dependency" in broken.error
    proc = subprocess.run([sys.executable, "-m", "diffkit", "plugins"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(broken_site)})
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("diffkit-community-broken"))
    assert "failed" in line
    assert any(x.startswith("diffkit-pipeline-ddim") and "loaded" in x for x in proc.stdout.splitlines())


def test_broken_community_package_is_an_error_in_strict_mode(broken_site, ddim_checkpoint, monkeypatch):
    monkeypatch.setenv("DIFFKIT_STRICT_PLUGINS", "1")
    with registry.isolated(autoload=True):
        with pytest.raises(PluginError, match="diffkit-community-broken.*some_missing_dependency"):
            DiffusionPipeline.from_pretrained(ddim_checkpoint)
