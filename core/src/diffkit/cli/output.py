"""Writing what ``generate`` made: checking ``--output``, images as one grid, audio as WAV files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import EXIT_MISSING, CLIError

#: what ``--output`` may end in for audio; images take any suffix Pillow can write
AUDIO_SUFFIX = ".wav"
IMAGE_SUFFIX = ".png"
#: pixels between the images of a grid, and their value
GRID_GAP = 2
GRID_GAP_VALUE = 255


def check_output(path: Path | None) -> Path | None:
    """Fail early (before loading anything) when ``--output`` cannot be written."""
    folder = Path.cwd() if path is None else path.parent
    if path is not None:
        if path.is_dir():
            raise CLIError(f"--output {path} is a folder; give a file name such as {path / ('out' + IMAGE_SUFFIX)}")
        suffix = path.suffix.lower()
        if suffix != AUDIO_SUFFIX and suffix not in image_formats():
            raise CLIError(
                f"--output {path}: unknown file type {path.suffix or '(no suffix)'!r}; "
                f"use {IMAGE_SUFFIX} (or another image type Pillow writes) for images, {AUDIO_SUFFIX} for audio"
            )
    if not folder.is_dir():
        raise CLIError(f"--output {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CLIError(f"cannot write to the folder {folder}")
    return path


def image_formats() -> dict[str, str]:
    """File suffix -> Pillow format, for the formats Pillow can write."""
    from PIL import Image

    Image.init()
    return {ext: fmt for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}


def suffix_kind(path: Path) -> str:
    return "audio" if path.suffix.lower() == AUDIO_SUFFIX else "image"


def declared_kind(pipe: Any) -> str | None:
    """``"image"`` or ``"audio"`` when the return annotation of ``pipe.__call__`` names one output class."""
    import inspect

    annotation = inspect.signature(pipe.__call__).return_annotation
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    kinds = {
        kind for kind, name in (("image", "ImagePipelineOutput"), ("audio", "AudioPipelineOutput")) if name in text
    }
    return kinds.pop() if len(kinds) == 1 else None


def classify(result: Any, pipeline_name: str) -> tuple[str, Any]:
    """What a pipeline returned: ``("image", images)`` or ``("audio", audios)``.

    Output objects are read by field; a bare tuple (``return_dict=False`` style) by its first
    item; a bare array or tensor by its rank (4: images, 1 to 3: audio).
    """
    for kind, field_name in (("image", "images"), ("audio", "audios")):
        value = getattr(result, field_name, None)
        if value is not None:
            return kind, value
    if isinstance(result, tuple) and result:
        result = result[0]
    if isinstance(result, list) and result and all(hasattr(im, "save") for im in result):
        return "image", result
    ndim = getattr(result, "ndim", None)
    if ndim == 4:
        return "image", result
    if ndim in (1, 2, 3):
        return "audio", result
    raise CLIError(f"{pipeline_name} returned {type(result).__name__}, which holds no images or audio", EXIT_MISSING)


def default_output(source: str, suffix: str) -> Path:
    name = Path(source.rstrip("/\\")).name or "output"
    return Path.cwd() / f"{name}{suffix}"


def as_pil(images: Any) -> list[Any]:
    """Pipeline images (PIL list, NHWC numpy in [0, 1], or NCHW tensor in [0, 1]) as PIL images."""
    import numpy as np

    from ..outputs import numpy_to_pil

    if isinstance(images, (list, tuple)) and all(hasattr(im, "save") for im in images):
        return list(images)
    if hasattr(images, "detach"):
        images = images.detach().float().cpu().permute(0, 2, 3, 1).numpy()
    array = np.asarray(images)
    if array.ndim != 4:
        raise CLIError(f"the pipeline returned images shaped {array.shape}; expected a batch of images", EXIT_MISSING)
    return numpy_to_pil(np.clip(array, 0.0, 1.0))


def grid_shape(count: int) -> tuple[int, int]:
    """``(columns, rows)`` of a grid of ``count`` images: ``ceil(sqrt(count))`` columns."""
    import math

    cols = math.ceil(math.sqrt(count))
    return cols, math.ceil(count / cols)


def image_grid(images: Sequence[Any], gap: int = GRID_GAP) -> Any:
    """One PIL image holding ``images`` in rows of ``ceil(sqrt(n))``, ``gap`` pixels apart (one image: itself)."""
    from PIL import Image

    if len(images) == 1:
        return images[0]
    mode = "RGB" if any(im.mode != "L" for im in images) else "L"
    width = max(im.width for im in images)
    height = max(im.height for im in images)
    cols, rows = grid_shape(len(images))
    fill = GRID_GAP_VALUE if mode == "L" else (GRID_GAP_VALUE,) * 3
    grid = Image.new(mode, (cols * width + (cols - 1) * gap, rows * height + (rows - 1) * gap), fill)
    for i, im in enumerate(images):
        row, col = divmod(i, cols)
        grid.paste(im.convert(mode), (col * (width + gap), row * (height + gap)))
    return grid


def write_images(images: Any, path: Path) -> str:
    from ..audio import partial_path

    pictures = as_pil(images)
    grid = image_grid(pictures)
    fmt = image_formats()[path.suffix.lower()]
    tmp = partial_path(path)
    try:
        grid.save(tmp, format=fmt)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    w, h = pictures[0].size
    if len(pictures) == 1:
        return f"1 image of {w}x{h}"
    cols, rows = grid_shape(len(pictures))
    return f"{len(pictures)} images of {w}x{h} in a {cols}x{rows} grid ({grid.width}x{grid.height} px)"


def sample_rate_of(pipe: Any) -> int:
    """The audio sample rate: the pipeline's ``sample_rate``, else a component config's ``sample_rate``."""
    rate = getattr(pipe, "sample_rate", None)
    if rate is None:
        for component in pipe.components.values():
            rate = getattr(getattr(component, "config", None), "sample_rate", None)
            if rate is not None:
                break
    if rate is None:
        raise CLIError(f"{type(pipe).__name__} made audio but declares no sample_rate", EXIT_MISSING)
    return int(rate)


def write_audio(audios: Any, path: Path, sample_rate: int) -> tuple[list[Path], str]:
    """One WAV per clip: ``path`` itself for one clip, ``stem-0.wav``, ``stem-1.wav``... for several."""
    import numpy as np

    from ..audio import write_wav

    clips = audios.detach().float().cpu().numpy() if hasattr(audios, "detach") else np.asarray(audios)
    if clips.ndim == 1:
        clips = clips[None, None, :]
    elif clips.ndim == 2:
        clips = clips[:, None, :]
    paths = [path] if len(clips) == 1 else [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(len(clips))]
    for clip, target in zip(clips, paths, strict=True):
        write_wav(target, clip, sample_rate)
    seconds = clips.shape[-1] / sample_rate
    what = "1 clip" if len(clips) == 1 else f"{len(clips)} clips"
    return paths, f"{what} of {seconds:.2f} s, {clips.shape[1]} channel(s) at {sample_rate} Hz"


def size_label(paths: Sequence[Path]) -> str:
    total = sum(p.stat().st_size for p in paths)
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if total >= scale:
            return f"{total / scale:.1f} {unit}"
    return f"{total} B"
