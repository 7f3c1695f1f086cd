"""``write_wav``: save a generated clip as a 16-bit PCM WAV file (standard library ``wave``).

The writer lives in the core (:mod:`diffkit.audio`) because ``diffkit generate`` writes audio
for any pipeline; it is re-exported here so Dance Diffusion users find it beside the
pipeline: ``write_wav("clip.wav", pipe(...).audios[0], pipe.sample_rate)``.
"""

from diffkit.audio import PCM16_MAX, write_wav

__all__ = ["PCM16_MAX", "write_wav"]
