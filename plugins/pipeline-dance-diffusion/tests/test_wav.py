"""write_wav: 16-bit PCM files that the standard library reads back exactly."""

import wave

import numpy as np
import pytest
import torch

from diffkit_pipeline_dance_diffusion.wav import PCM16_MAX, write_wav


def _read(path):
    with wave.open(str(path), "rb") as wav:
        params = wav.getparams()
        frames = np.frombuffer(wav.readframes(params.nframes), dtype="<i2")
    return params, frames.reshape(-1, params.nchannels)


def test_stereo_clip_round_trips_interleaved(tmp_path):
    audio = np.stack([np.linspace(-1, 1, 9), np.linspace(0.5, -0.5, 9)]).astype(np.float32)
    path = write_wav(tmp_path / "clip.wav", audio, 16000)
    params, frames = _read(path)
    assert (params.nchannels, params.sampwidth, params.framerate, params.nframes) == (2, 2, 16000, 9)
    np.testing.assert_array_equal(frames[:, 0], np.rint(audio[0].astype(np.float64) * PCM16_MAX))
    np.testing.assert_array_equal(frames[:, 1], np.rint(audio[1].astype(np.float64) * PCM16_MAX))
    assert frames[0, 0] == -PCM16_MAX and frames[-1, 0] == PCM16_MAX


def test_mono_tensor_is_clipped_to_full_scale(tmp_path):
    path = write_wav(tmp_path / "mono.wav", torch.tensor([0.0, 2.0, -3.0, 0.25]), 8000)
    params, frames = _read(path)
    assert params.nchannels == 1
    assert frames[:, 0].tolist() == [0, PCM16_MAX, -PCM16_MAX, round(0.25 * PCM16_MAX)]


def test_an_existing_file_is_replaced_and_nothing_else_is_left(tmp_path):
    target = tmp_path / "out.wav"
    target.write_bytes(b"old")
    write_wav(target, np.zeros((1, 4)), 22050)
    assert _read(target)[0].nframes == 4
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]


@pytest.mark.parametrize(
    "audio, rate, message",
    [
        (np.zeros((2, 2, 4)), 8000, "channels, samples"),
        (np.zeros((2, 0)), 8000, "channels, samples"),
        (np.array([0.0, np.nan]), 8000, "NaN"),
        (np.zeros(4), 0, "sample_rate"),
        (np.zeros(4), 8000.5, "sample_rate"),
    ],
)
def test_bad_input_is_refused_without_writing(tmp_path, audio, rate, message):
    with pytest.raises(ValueError, match=message):
        write_wav(tmp_path / "bad.wav", audio, rate)
    assert list(tmp_path.iterdir()) == []
