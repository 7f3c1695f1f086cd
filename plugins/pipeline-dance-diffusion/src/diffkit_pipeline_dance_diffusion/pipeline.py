"""``DanceDiffusionPipeline``: unconditional audio generation (Harmonai's Dance Diffusion)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from diffkit.outputs import AudioPipelineOutput, output_type_of
from diffkit.pipeline import Pipeline
from diffkit.randomness import randn_tensor
from diffkit.scheduler import Scheduler
from diffkit_models_unet.unet_1d import UNet1DModel

logger = logging.getLogger("diffkit.pipeline")

StepCallback = Callable[[Any, int, torch.Tensor, dict[str, Any]], dict[str, Any]]

#: the shortest clip, in multiples of the UNet's total downsampling factor
MIN_LENGTH_FACTOR = 3


def plan_length(unet_config: Any, num_up_blocks: int, audio_length_in_s: float | None) -> tuple[int, int]:
    """``(generated, kept)`` sample counts for a clip of ``audio_length_in_s`` seconds.

    The UNet needs a length divisible by ``2 ** num_up_blocks``: a clip that is not is generated
    longer and cut to ``kept`` samples afterwards. ``None`` means the UNet's own
    ``sample_size``. Computed in floating point exactly as diffusers does, so lengths agree.
    """
    rate = unet_config.sample_rate
    if rate is None:
        raise ValueError(
            "the UNet1DModel config has no sample_rate, so seconds cannot be turned into samples; "
            "set sample_rate in the UNet's config.json"
        )
    if audio_length_in_s is None:
        audio_length_in_s = unet_config.sample_size / rate
    if audio_length_in_s <= 0:
        raise ValueError(f"audio_length_in_s must be positive, got {audio_length_in_s}")
    length = audio_length_in_s * rate
    factor = 2**num_up_blocks
    if length < MIN_LENGTH_FACTOR * factor:
        raise ValueError(
            f"audio_length_in_s={audio_length_in_s} is too short for this UNet: it must be at least "
            f"{MIN_LENGTH_FACTOR * factor / rate} s ({MIN_LENGTH_FACTOR * factor} samples at {rate} Hz)"
        )
    kept = int(length)
    if length % factor != 0:
        length = ((audio_length_in_s * rate) // factor + 1) * factor
        logger.info(
            "audio_length_in_s=%s is generated as %s s (a multiple of the UNet's downsampling) and cut back to %s s",
            audio_length_in_s,
            length / rate,
            kept / rate,
        )
    return int(length), kept


class DanceDiffusionPipeline(Pipeline):
    """Generate audio clips from noise with a ``UNet1DModel`` and (normally) ``IPNDMScheduler``.

    The clip length is ``audio_length_in_s`` seconds at the UNet's ``sample_rate``; the output
    is a float array ``(batch, channels, samples)`` in ``[-1, 1]`` (see :func:`write_wav`).
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ("audio",)

    def __init__(self, unet: UNet1DModel, scheduler: Scheduler) -> None:
        super().__init__(unet=unet, scheduler=scheduler)

    @property
    def sample_rate(self) -> int | None:
        """The UNet's sample rate in Hz (what generated clips play at)."""
        return self.unet.config.sample_rate

    @torch.inference_mode()
    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int = 100,
        generator: torch.Generator | list[torch.Generator] | None = None,
        audio_length_in_s: float | None = None,
        return_dict: bool = True,
        output_type: str = "np",
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("audio",),
    ) -> AudioPipelineOutput | tuple[Any]:
        """Generate ``batch_size`` clips of ``audio_length_in_s`` seconds (default: the UNet's
        ``sample_size``) in ``num_inference_steps`` steps.

        ``output_type``: ``"np"`` (float32 numpy) or ``"pt"`` (a tensor on the execution device).
        ``callback_on_step_end(pipe, step, timestep, {"audio": ...})`` may replace the running audio.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        output_type = output_type_of(output_type, ("np", "pt"), " (audio pipelines return arrays)")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators for batch_size={batch_size}; pass one per clip")
        length, kept = plan_length(self.unet.config, len(self.unet.up_blocks), audio_length_in_s)

        device = self._execution_device
        dtype = self.unet.dtype
        shape = (batch_size, self.unet.config.in_channels, length)
        tensors = {"audio": randn_tensor(shape, generator=generator, device=device, dtype=dtype)}
        state = self.scheduler.plan(num_inference_steps, device=device)
        for i, t in enumerate(self.progress_bar(state.timesteps)):
            # the UNet sees the timestep in its own precision, as in diffusers
            model_output = self.unet(tensors["audio"], t.to(dtype)).sample
            tensors["audio"] = state.step(model_output, t, tensors["audio"]).prev_sample
            tensors = self.run_step_callback(callback_on_step_end, i, t, tensors, callback_on_step_end_tensor_inputs)

        audio = tensors["audio"].clamp(-1, 1).float()[:, :, :kept]
        audios: Any = audio if output_type == "pt" else audio.cpu().numpy()
        self.maybe_free_model_hooks()
        return AudioPipelineOutput(audios=audios) if return_dict else (audios,)
