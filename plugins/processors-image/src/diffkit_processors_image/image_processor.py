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
from pydantic import model_validator

from diffkit.config import Config
from diffkit.finite import check_images
from diffkit.outputs import numpy_to_pil, output_type_of
from diffkit.processor import Processor

from .geometry import RESIZE_MODES, ResizeMode, apply_overlay, blur, get_crop_region, resize_and_crop, resize_and_fill

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

    @model_validator(mode="after")
    def _one_colour_conversion(self) -> VaeImageProcessorConfig:
        if self.do_convert_rgb and self.do_convert_grayscale:
            raise ValueError("do_convert_rgb and do_convert_grayscale are both true; set one (RGB images or grayscale masks)")
        return self


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

    # -- pre-processing ------------------------------------------------------------------
    def _resample(self) -> PIL.Image.Resampling:
        return _RESAMPLE[self.config.resample]

    def get_default_height_width(
        self, image: PIL.Image.Image | np.ndarray | torch.Tensor, height: int | None = None, width: int | None = None
    ) -> tuple[int, int]:
        """``(height, width)``: the given values or the image's own (``NCHW`` tensor, ``NHW[C]`` array), each
        rounded down to a multiple of ``vae_scale_factor``."""
        if isinstance(image, PIL.Image.Image):
            own_height, own_width = image.height, image.width
        elif isinstance(image, torch.Tensor):
            own_height, own_width = image.shape[2], image.shape[3]
        else:
            own_height, own_width = image.shape[1], image.shape[2]
        factor = self.config.vae_scale_factor
        height = own_height if height is None else height
        width = own_width if width is None else width
        if height < factor or width < factor:
            raise ValueError(
                f"image size {height}x{width} (height x width) is smaller than the VAE scale factor {factor}; "
                f"pass images of at least {factor}x{factor} pixels"
            )
        return height - height % factor, width - width % factor

    def resize(
        self,
        image: PIL.Image.Image | np.ndarray | torch.Tensor,
        height: int,
        width: int,
        resize_mode: ResizeMode = "default",
    ) -> PIL.Image.Image | np.ndarray | torch.Tensor:
        """Resize to ``height x width``: PIL with the configured filter (``fill``/``crop`` keep the aspect,
        PIL only), ``NCHW`` tensors and ``NHWC`` arrays with nearest-neighbour interpolation."""
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode={resize_mode!r} is not one of {', '.join(RESIZE_MODES)}")
        if resize_mode != "default" and not isinstance(image, PIL.Image.Image):
            raise ValueError(
                f"resize_mode={resize_mode!r} needs PIL images, got {type(image).__name__}; pass PIL images or "
                "use resize_mode='default'"
            )
        if isinstance(image, PIL.Image.Image):
            if resize_mode == "fill":
                return resize_and_fill(image, width, height, self._resample())
            if resize_mode == "crop":
                return resize_and_crop(image, width, height, self._resample())
            return image.resize((width, height), resample=self._resample(), reducing_gap=self.config.reducing_gap)
        if isinstance(image, np.ndarray):
            return pt_to_numpy(torch.nn.functional.interpolate(_numpy_batch_to_pt(image), size=(height, width)))
        return torch.nn.functional.interpolate(image, size=(height, width))

    @staticmethod
    def get_crop_region(mask_image: PIL.Image.Image, width: int, height: int, pad: int = 0) -> tuple[int, int, int, int]:
        """The box around a mask's non-zero pixels, padded and widened to ``width:height`` (see :func:`geometry.get_crop_region`)."""
        return get_crop_region(mask_image, width, height, pad)

    @staticmethod
    def blur(image: PIL.Image.Image, blur_factor: int = 4) -> PIL.Image.Image:
        """Gaussian blur (softens a mask's edge)."""
        return blur(image, blur_factor)

    def apply_overlay(
        self,
        mask: PIL.Image.Image,
        init_image: PIL.Image.Image,
        image: PIL.Image.Image,
        crop_coords: tuple[int, int, int, int] | None = None,
    ) -> PIL.Image.Image:
        """The original image where the mask is black, the inpainted ``image`` elsewhere (see :func:`geometry.apply_overlay`)."""
        return apply_overlay(mask, init_image, image, crop_coords, self._resample())

    def preprocess(
        self,
        image: PIL.Image.Image | np.ndarray | torch.Tensor | Sequence[Any],
        height: int | None = None,
        width: int | None = None,
        resize_mode: ResizeMode = "default",
        crops_coords: tuple[int, int, int, int] | None = None,
    ) -> torch.Tensor:
        """User image(s) -> ``NCHW`` float tensor, as diffusers' ``VaeImageProcessor.preprocess``.

        PIL images are cropped to ``crops_coords``, resized (``resize_mode``) to ``height x width``
        or their own size, each rounded down to a multiple of ``vae_scale_factor``, then converted
        to RGB or grayscale as configured. Arrays (``NHWC``/``HWC``/``HW`` in ``[0, 1]``) and tensors
        (``NCHW``/``CHW`` in ``[0, 1]``) are resized with nearest-neighbour interpolation; a tensor
        with ``vae_latent_channels`` channels is taken as latents and returned unchanged. Values
        are then mapped to ``[-1, 1]`` (``do_normalize``, skipped for input already below 0) and
        thresholded at 0.5 (``do_binarize``).
        """
        items = self._as_items(image)
        first = items[0]
        if isinstance(first, PIL.Image.Image):
            if crops_coords is not None:
                items = [i.crop(crops_coords) for i in items]
            if self.config.do_resize:
                height, width = self.get_default_height_width(items[0], height, width)
                items = [self.resize(i, height, width, resize_mode) for i in items]
            if self.config.do_convert_rgb:
                items = [i.convert("RGB") for i in items]
            elif self.config.do_convert_grayscale:
                items = [i.convert("L") for i in items]
            tensor = _numpy_batch_to_pt(pil_to_numpy(items))
        else:
            if resize_mode != "default":
                self.resize(first, 1, 1, resize_mode)  # raises: fill and crop need PIL images
            if isinstance(first, np.ndarray):
                tensor = _numpy_batch_to_pt(np.concatenate(items) if first.ndim == 4 else np.stack(items))
            else:
                tensor = torch.cat(items) if first.ndim == 4 else torch.stack(items)
                if tensor.ndim == 3:  # a batch of single-channel HW tensors (grayscale masks)
                    tensor = tensor.unsqueeze(1)
                if tensor.shape[1] == self.config.vae_latent_channels:
                    return tensor
            height, width = self.get_default_height_width(tensor, height, width)
            if self.config.do_resize:
                tensor = self.resize(tensor, height, width)
        if self.config.do_normalize and tensor.min() >= 0:
            tensor = normalize(tensor)
        if self.config.do_binarize:
            tensor = (tensor >= 0.5).to(tensor.dtype)
        return tensor

    def _as_items(self, image: Any) -> list[Any]:
        """The input as a non-empty list of one kind: PIL images, arrays or tensors (4-D ones may be batches)."""
        if self.config.do_convert_grayscale and isinstance(image, (np.ndarray, torch.Tensor)) and image.ndim == 3:
            # a 3-D mask is a batch of HW masks ((N, H, W)), or one HW1 array
            if isinstance(image, torch.Tensor):
                image = image.unsqueeze(1)
            else:
                image = image[None] if image.shape[-1] == 1 else image[..., None]
        items = list(image) if isinstance(image, (list, tuple)) else [image]
        if not items:
            raise ValueError("preprocess: got an empty list of images")
        kinds = {type(i) for i in items}
        for kind in (PIL.Image.Image, np.ndarray, torch.Tensor):
            if all(isinstance(i, kind) for i in items):
                break
        else:
            names = sorted({k.__name__ for k in kinds})
            raise TypeError(
                f"preprocess takes a PIL image, a numpy array or a torch tensor, or a list of one of these; got {', '.join(names)}"
            )
        if kind is np.ndarray and not all(np.issubdtype(i.dtype, np.floating) for i in items):
            raise TypeError("numpy arrays must hold floats in [0, 1] (divide 8-bit pixels by 255)")
        if kind is not PIL.Image.Image:
            dims = {i.ndim for i in items}
            if len(dims) != 1 or not dims <= {2, 3, 4}:
                raise ValueError(
                    f"{kind.__name__} inputs must all have 2 or 3 dimensions, or 4 for a batch; got {sorted(dims)}"
                )
        return items


def _numpy_batch_to_pt(images: np.ndarray) -> torch.Tensor:
    """``NHWC`` (or ``NHW``, one channel) float array -> ``NCHW`` tensor."""
    if images.ndim == 3:
        images = images[..., None]
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
