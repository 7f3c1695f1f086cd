"""PIL geometry for image-conditioned pipelines: the resize modes, the crop around a mask, blur, overlay.

Pure functions of PIL images, with diffusers' ``VaeImageProcessor`` semantics (inpainting's
``padding_mask_crop`` relies on them giving the same pixels).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import PIL.Image
import PIL.ImageFilter
import PIL.ImageOps

ResizeMode = Literal["default", "fill", "crop"]
RESIZE_MODES: tuple[str, ...] = ("default", "fill", "crop")


def fitted_size(width: int, height: int, src_width: int, src_height: int, cover: bool) -> tuple[int, int]:
    """The source size scaled (keeping its aspect) to fit inside ``width x height``, or to cover it when ``cover``.

    The side that is not pinned to the target rounds down, as diffusers' integer arithmetic does.
    """
    ratio, src_ratio = width / height, src_width / src_height
    pin_width = ratio > src_ratio if cover else ratio < src_ratio
    if pin_width:
        return width, src_height * width // src_width
    return src_width * height // src_height, height


def resize_and_fill(
    image: PIL.Image.Image, width: int, height: int, resample: PIL.Image.Resampling
) -> PIL.Image.Image:
    """Fit ``image`` inside ``width x height`` keeping its aspect, centred; the empty bands repeat its edge rows/columns."""
    ratio, src_ratio = width / height, image.width / image.height
    src_w, src_h = fitted_size(width, height, image.width, image.height, cover=False)
    resized = image.resize((src_w, src_h), resample=resample)
    result = PIL.Image.new("RGB", (width, height))
    result.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < src_ratio:
        band = height // 2 - src_h // 2
        if band > 0:
            # stretch the first and the last row over the bands above and below
            result.paste(resized.resize((width, band), box=(0, 0, width, 0)), box=(0, 0))
            edge = (0, resized.height, width, resized.height)
            result.paste(resized.resize((width, band), box=edge), box=(0, band + src_h))
    elif ratio > src_ratio:
        band = width // 2 - src_w // 2
        if band > 0:
            result.paste(resized.resize((band, height), box=(0, 0, 0, height)), box=(0, 0))
            edge = (resized.width, 0, resized.width, height)
            result.paste(resized.resize((band, height), box=edge), box=(band + src_w, 0))
    return result


def resize_and_crop(
    image: PIL.Image.Image, width: int, height: int, resample: PIL.Image.Resampling
) -> PIL.Image.Image:
    """Scale ``image`` to cover ``width x height`` keeping its aspect, centred; what sticks out is cut off."""
    src_w, src_h = fitted_size(width, height, image.width, image.height, cover=True)
    resized = image.resize((src_w, src_h), resample=resample)
    result = PIL.Image.new("RGB", (width, height))
    result.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    return result


def _blank_margins(nonzero: np.ndarray) -> tuple[int, int]:
    """How many entries at the start and at the end of a 1-D boolean array are False (all of them if none is True)."""
    hits = np.flatnonzero(nonzero)
    if hits.size == 0:
        return nonzero.size, nonzero.size
    return int(hits[0]), int(nonzero.size - 1 - hits[-1])


def _widen(low: int, high: int, extra: int, limit: int) -> tuple[int, int]:
    """Grow ``[low, high)`` by ``extra`` split around it, shifted back inside ``[0, limit]``."""
    low -= extra // 2
    high += extra - extra // 2
    if high >= limit:
        low, high = low - (high - limit), limit
    if low < 0:
        low, high = 0, high - low
    return low, min(high, limit)


def get_crop_region(mask_image: PIL.Image.Image, width: int, height: int, pad: int = 0) -> tuple[int, int, int, int]:
    """``(x1, y1, x2, y2)``: the box around the mask's non-zero pixels, padded by ``pad`` and widened to the
    aspect ratio of ``width x height`` (inpainting's ``padding_mask_crop``)."""
    mask = np.array(mask_image.convert("L"))
    h, w = mask.shape
    left, right = _blank_margins((mask != 0).any(axis=0))
    top, bottom = _blank_margins((mask != 0).any(axis=1))
    x1, y1 = max(left - pad, 0), max(top - pad, 0)
    x2, y2 = min(w - right + pad, w), min(h - bottom + pad, h)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(
            "get_crop_region: the mask has no non-zero pixel to crop around; padding_mask_crop needs a mask "
            "that marks the region to inpaint"
        )
    target = width / height
    if (x2 - x1) / (y2 - y1) > target:
        y1, y2 = _widen(y1, y2, int((x2 - x1) / target - (y2 - y1)), mask_image.height)
    else:
        x1, x2 = _widen(x1, x2, int((y2 - y1) * target - (x2 - x1)), mask_image.width)
    return x1, y1, x2, y2


def blur(image: PIL.Image.Image, blur_factor: int = 4) -> PIL.Image.Image:
    """Gaussian blur of radius ``blur_factor`` (softens a mask's edge before inpainting)."""
    return image.filter(PIL.ImageFilter.GaussianBlur(blur_factor))


def apply_overlay(
    mask: PIL.Image.Image,
    init_image: PIL.Image.Image,
    image: PIL.Image.Image,
    crop_coords: tuple[int, int, int, int] | None,
    resample: PIL.Image.Resampling,
) -> PIL.Image.Image:
    """Paste the original image back over ``image`` where the mask is black (kept), the inpainted pixels elsewhere.

    With ``crop_coords`` the inpainted ``image`` covers only that box of the original and is first
    scaled into it (``resize_and_crop``).
    """
    width, height = init_image.width, init_image.height
    # premultiplied alpha: the original, opaque where the mask is black
    kept = PIL.Image.new("RGBa", (width, height))
    kept.paste(init_image.convert("RGBA").convert("RGBa"), mask=PIL.ImageOps.invert(mask.convert("L")))
    kept = kept.convert("RGBA")
    if crop_coords is not None:
        x1, y1, x2, y2 = crop_coords
        canvas = PIL.Image.new("RGBA", (width, height))
        canvas.paste(resize_and_crop(image, x2 - x1, y2 - y1, resample), (x1, y1))
        image = canvas.convert("RGB")
    composed = image.convert("RGBA")
    composed.alpha_composite(kept)
    return composed.convert("RGB")
