"""``output_type="numpy"``, diffusers' alias of ``"np"``, wherever a pipeline checks ``output_type`` itself."""

from __future__ import annotations

import pytest

from diffkit_pipeline_stable_diffusion.base import StableDiffusionBase


def test_stable_diffusion_accepts_output_type_numpy():
    StableDiffusionBase.check_output_type("numpy")
    with pytest.raises(ValueError, match="output_type='jpeg'"):
        StableDiffusionBase.check_output_type("jpeg")
