"""The plugin wiring: a light hook module and the registered model name."""

import subprocess
import sys

from diffkit_models_unet import hooks


def test_hooks_register_the_model_by_module_path():
    registered = []
    hooks.register_models(lambda name, target, **meta: registered.append((name, target)))
    assert registered == [
        ("UNet2DModel", "diffkit_models_unet.unet_2d:UNet2DModel"),
        ("UNet1DModel", "diffkit_models_unet.unet_1d:UNet1DModel"),
        ("UNet2DConditionModel", "diffkit_models_unet.unet_2d_condition:UNet2DConditionModel"),
    ]


def test_hook_module_does_not_import_torch():
    code = (
        "import sys, diffkit_models_unet, diffkit_models_unet.hooks; "
        "heavy = [m for m in ('torch', 'diffkit_models_unet.unet_2d', 'diffkit_models_unet.unet_1d', "
        "'diffkit_models_unet.unet_2d_condition') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_installed_registry_resolves_the_model(diffkit_installed_registry):
    from diffkit_models_unet.unet_2d import UNet2DModel

    assert diffkit_installed_registry.get("model", "UNet2DModel") is UNet2DModel
    entry = diffkit_installed_registry.entry("model", "UNet2DModel")
    assert entry.dist == "diffkit-models-unet"


def test_installed_registry_resolves_the_condition_model(diffkit_installed_registry):
    from diffkit_models_unet.unet_2d_condition import UNet2DConditionModel

    assert diffkit_installed_registry.get("model", "UNet2DConditionModel") is UNet2DConditionModel
    assert diffkit_installed_registry.entry("model", "UNet2DConditionModel").dist == "diffkit-models-unet"
