"""``write_wav``: float audio to a 16-bit PCM WAV file, with the standard library's ``wave``.

Audio pipelines (``AudioPipelineOutput.audios``) and ``diffkit generate`` use it, so that
writing sound needs no extra dependency. Importing this module does not import torch.
"""

from __future__ import annotations

import os
import secrets
import wave
from pathlib import Path
from typing import Any

import numpy as np

#: the largest value of a 16-bit sample; float 1.0 maps to it
PCM16_MAX = 32767


def write_wav(path: str | os.PathLike[str], audio: Any, sample_rate: int) -> Path:
    """Write ``audio`` to ``path`` as 16-bit PCM and return the path.

    ``audio`` holds floats in [-1, 1] (values outside are clipped), shaped ``(samples,)`` or
    ``(channels, samples)``: a numpy array, a torch tensor or nested sequences. The file is
    written beside ``path`` and renamed into place, so a failure leaves no partial file.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    if hasattr(audio, "detach"):  # a torch tensor, without importing torch
        audio = audio.detach().float().cpu().numpy()
    samples = np.asarray(audio, dtype=np.float64)
    if samples.ndim == 1:
        samples = samples[None, :]
    if samples.ndim != 2 or samples.shape[0] == 0 or samples.shape[1] == 0:
        raise ValueError(f"audio must be shaped (samples,) or (channels, samples), got {tuple(np.shape(audio))}")
    if not np.isfinite(samples).all():
        raise ValueError("audio contains NaN or infinite values")
    pcm = np.round(np.clip(samples, -1.0, 1.0) * PCM16_MAX).astype("<i2")
    frames = pcm.T.tobytes()  # interleaved: one sample of every channel per frame

    target = Path(path)
    tmp = partial_path(target)
    try:
        with open(tmp, "xb") as raw, wave.open(raw, "wb") as wav:
            wav.setnchannels(pcm.shape[0])
            wav.setsampwidth(2)
            wav.setframerate(int(sample_rate))
            wav.writeframes(frames)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def partial_path(target: Path) -> Path:
    """A fresh hidden name beside ``target`` to write into before renaming (permissions follow the umask)."""
    return target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
