import subprocess
import sys

import numpy as np
import PIL.Image
import torch

from diffkit import registry
from diffkit_pipeline_repaint.pipeline import RePaintPipeline, preprocess_image, preprocess_mask

torch.set_num_threads(1)


def test_registered_and_light_hooks():
    assert registry.get("pipeline", "RePaintPipeline") is RePaintPipeline
    subprocess.run([sys.executable, "-c", "import sys, diffkit_pipeline_repaint.hooks; assert 'torch' not in sys.modules"], check=True)
    assert RePaintPipeline.component_names() == ["scheduler", "unet"]


def test_preprocessing_sizes_ranges_and_masks():
    image = PIL.Image.fromarray(np.full((37, 70, 3), 255, dtype=np.uint8))
    pixels = preprocess_image(image)
    assert pixels.shape == (1, 3, 32, 64) and pixels.dtype == torch.float32 and bool((pixels == 1).all())
    mask = np.zeros((37, 70), dtype=np.uint8)
    mask[:, 40:] = 200
    m = preprocess_mask(PIL.Image.fromarray(mask).convert("RGB"))
    assert m.shape == (1, 1, 32, 64) and set(m.unique().tolist()) == {0.0, 1.0}
    assert bool((m[..., 45:] == 1).all()) and bool((m[..., :35] == 0).all())
    tensor = torch.rand(2, 3, 8, 8)
    assert preprocess_image(tensor) is not None and torch.equal(preprocess_image([tensor[0], tensor[1]]), tensor)
    assert preprocess_mask(torch.ones(8, 8)[None]).shape == (1, 1, 8, 8)
