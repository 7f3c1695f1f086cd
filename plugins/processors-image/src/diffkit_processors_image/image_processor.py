"""``VaeImageProcessor``: user images <-> model tensors.

Model tensors are ``NCHW`` floats in ``[-1, 1]``; user images are PIL images, ``NHWC`` numpy
floats in ``[0, 1]`` or ``NCHW`` tensors in ``[0, 1]``. The config fields and their defaults
are diffusers' so that the same processor config means the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import PIL.Image
import torch

from diffkit.config import Config
from diffkit.finite import check_images
from diffkit.outputs import numpy_to_pil, output_type_of
from diffkit.processor import Processor

OutputType = Literal["pil", "np", "pt", "latent"]
OUTPUT_TYPES: tuple[str, ...] = ("pil", "np", "pt", "latent")

_RESAMPLE = {
    "nearest": PIL.Image.Resampling.NEAREST,
    "bilinear": PIL.Image.Resampling.BILINEAR,
    "bicubic": PIL.Image.Resampling.BICUBIC,
    "lanczos": PIL.Image.Resampling.LANCZOS,
    "box": PIL.Image.Resampling.BOX,
    "hamming": PIL.Image.Resampling.HAMMING,
}


class VaeImageProcessorConfig(Config):
    owner_name = "VaeImageProcessor"
    do_resize: bool = True
    vae_scale_factor: int = 8
    vae_latent_channels: int = 4
    resample: Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"] = "lanczos"
    reducing_gap: int | None = None
    do_normalize: bool = True
    do_binarize: bool = False
    do_convert_rgb: bool = False
    do_convert_grayscale: bool = False


def denormalize(images: torch.Tensor) -> torch.Tensor:
    # [-1, 1] -> [0, 1]: x / 2 + 0.5, clamped
    return (images / 2 + 0.5).clamp(0, 1)


def normalize(images: torch.Tensor) -> torch.Tensor:
    # [0, 1] -> [-1, 1]: 2x - 1
    return 2.0 * images - 1.0


def pt_to_numpy(images: torch.Tensor) -> np.ndarray:
    """``NCHW`` tensor -> ``NHWC`` float32 array on the CPU."""
    return images.detach().cpu().permute(0, 2, 3, 1).float().numpy()


def numpy_to_pt(images: np.ndarray) -> torch.Tensor:
    """``NHWC`` (or ``HWC``) array -> ``NCHW`` tensor."""
    if images.ndim == 3:
        images = images[..., None] if images.shape[-1] not in (1, 3, 4) else images[None]
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def pil_to_numpy(images: Sequence[PIL.Image.Image]) -> np.ndarray:
    """PIL images -> ``NHWC`` float32 array in ``[0, 1]``."""
    arrays = [np.asarray(img).astype(np.float32) / 255.0 for img in images]
    arrays = [a[..., None] if a.ndim == 2 else a for a in arrays]
    return np.stack(arrays, axis=0)


class VaeImageProcessor(Processor):
    """Pre- and post-processing of images for pipelines that work in pixel or latent space."""

    config_class = VaeImageProcessorConfig
    config_name = "preprocessor_config.json"

    def postprocess(
        self,
        image: torch.Tensor,
        output_type: str = "pil",
        do_denormalize: Sequence[bool] | None = None,
    ) -> Any:
        """Model output ``NCHW`` in ``[-1, 1]`` -> ``output_type`` (pil | np | pt | latent)."""
        output_type = output_type_of(output_type, OUTPUT_TYPES)
        if output_type == "latent":
            return image
        check_images(image)
        if do_denormalize is None:
            do_denormalize = [self.config.do_normalize] * image.shape[0]
        image = torch.stack([denormalize(img) if flag else img for img, flag in zip(image, do_denormalize, strict=True)])
        if output_type == "pt":
            return image
        array = pt_to_numpy(image)
        return array if output_type == "np" else numpy_to_pil(array)

    def preprocess(
        self,
        image: PIL.Image.Image | np.ndarray | torch.Tensor | Sequence[Any],
        height: int | None = None,
        width: int | None = None,
    ) -> torch.Tensor:
        """User image(s) -> ``NCHW`` float tensor, resized to a multiple of ``vae_scale_factor``, in ``[-1, 1]``."""
        images = list(image) if isinstance(image, (list, tuple)) else [image]
        if not images:
            raise ValueError("preprocess: got an empty list of images")
        if all(isinstance(i, PIL.Image.Image) for i in images):
            images = [self._prepare_pil(i, height, width) for i in images]
            tensor = numpy_to_pt(pil_to_numpy(images))
        elif all(isinstance(i, np.ndarray) for i in images):
            arrays = [i if i.ndim == 4 else i[None] for i in images]
            tensor = numpy_to_pt(np.concatenate(arrays, axis=0).astype(np.float32))
        elif all(isinstance(i, torch.Tensor) for i in images):
            tensor = torch.cat([i if i.ndim == 4 else i[None] for i in images], dim=0).float()
        else:
            kinds = sorted({type(i).__name__ for i in images})
            raise TypeError(f"preprocess: images must all be PIL images, numpy arrays or tensors, got {kinds}")
        if self.config.do_normalize and tensor.min() >= 0:
            tensor = normalize(tensor)
        if self.config.do_binarize:
            tensor = (tensor >= 0.5).to(tensor.dtype)
        return tensor

    def _prepare_pil(self, image: PIL.Image.Image, height: int | None, width: int | None) -> PIL.Image.Image:
        if self.config.do_convert_rgb:
            image = image.convert("RGB")
        elif self.config.do_convert_grayscale:
            image = image.convert("L")
        if self.config.do_resize:
            w, h = width or image.width, height or image.height
            factor = self.config.vae_scale_factor
            w, h = (w // factor) * factor, (h // factor) * factor
            if (w, h) != image.size:
                image = image.resize((w, h), resample=_RESAMPLE[self.config.resample], reducing_gap=self.config.reducing_gap)
        return image
