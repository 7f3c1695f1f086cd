"""``diffkit generate SOURCE``: load a pipeline, run it with a progress bar, write what it makes.

torch is imported inside the handler only. A pipeline input is one entry of
:data:`CALL_OPTIONS`; writing the result lives in :mod:`diffkit.cli.output`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._registry import registry
from ..errors import ComponentNotFoundError, DiffkitError, PluginError
from ..hookspecs import IMAGE_TO_IMAGE, INPAINTING, PretrainedDefaults
from .common import (
    EXIT_MISSING,
    EXIT_OK,
    CLIError,
    env_var,
    existing_file,
    finite_float,
    nonempty,
    one_line,
    positive_int,
    seed_number,
    unit_float,
)
from .output import (
    AUDIO_SUFFIX,
    IMAGE_SUFFIX,
    check_output,
    classify,
    declared_kind,
    default_output,
    sample_rate_of,
    size_label,
    suffix_kind,
    write_audio,
    write_images,
)


def _read_image(path: Path, mode: str, what: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except (UnidentifiedImageError, OSError) as exc:
        raise CLIError(f"cannot read the {what} {path}: {exc}") from None


def _open_image(path: Path, pipe: Any) -> Any:
    """An input image for ``pipe``: greyscale for a one-channel VAE (the digits demo), else RGB."""
    vae_config = getattr(getattr(pipe, "vae", None), "config", None)
    return _read_image(path, "L" if getattr(vae_config, "in_channels", 3) == 1 else "RGB", "image")


def _open_mask(path: Path, pipe: Any) -> Any:
    """A mask, greyscale: white where to paint, black where to keep."""
    return _read_image(path, "L", "mask image")


@dataclass(frozen=True)
class CallOption:
    """One ``generate`` option that becomes a keyword argument of the pipeline's ``__call__``.

    ``parameters`` are the ``__call__`` parameters it can fill, by preference: the first one
    the pipeline accepts gets the value. ``load`` turns the parsed text into the call value
    (e.g. opens an image for that pipeline) once the option is known to be used. A new kind of pipeline input
    is one more entry of :data:`CALL_OPTIONS`.
    """

    flag: str
    parameters: tuple[str, ...]
    metavar: str
    help: str
    parse: Callable[[str], Any]
    load: Callable[[Any, Any], Any] | None = None

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


#: ``generate`` options passed to the pipeline, each only where its ``__call__`` takes it
CALL_OPTIONS: tuple[CallOption, ...] = (
    CallOption("--steps", ("num_inference_steps",), "N", "denoising steps (default: the pipeline's)", positive_int),
    CallOption(
        "--num-images",
        ("batch_size", "num_images_per_prompt"),
        "N",
        "how many images (or audio clips) to generate (default: the pipeline's, usually 1)",
        positive_int,
    ),
    CallOption("--prompt", ("prompt",), "TEXT", "text prompt, for text-conditioned pipelines", nonempty),
    CallOption(
        "--negative-prompt", ("negative_prompt",), "TEXT", "what the image should not show (needs guidance)", nonempty
    ),
    CallOption(
        "--guidance-scale",
        ("guidance_scale",),
        "G",
        "classifier-free guidance weight; at most 1 turns guidance off (default: the pipeline's)",
        finite_float,
    ),
    CallOption("--height", ("height",), "PX", "image height in pixels (default: the pipeline's)", positive_int),
    CallOption("--width", ("width",), "PX", "image width in pixels (default: the pipeline's)", positive_int),
    CallOption("--image", ("image",), "FILE", "input image, for image-to-image pipelines", existing_file, _open_image),
    CallOption(
        "--mask-image",
        ("mask_image",),
        "FILE",
        "mask image, white where to paint, for inpainting pipelines",
        existing_file,
        _open_mask,
    ),
    CallOption(
        "--strength",
        ("strength",),
        "S",
        "with --image: how much of the schedule runs from the image, 0 to 1 (default: the pipeline's)",
        unit_float,
    ),
    CallOption(
        "--image-guidance-scale",
        ("image_guidance_scale",),
        "G",
        "how closely to follow --image, for InstructPix2Pix pipelines (default: the pipeline's)",
        finite_float,
    ),
)

#: the task a run does when image inputs are given: a mask makes it inpainting
IMAGE_INPUTS: tuple[tuple[str, str], ...] = (("mask_image", INPAINTING), ("image", IMAGE_TO_IMAGE))


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "generate",
        help="run a pipeline and write what it makes: a PNG grid of images, or WAV audio",
        description="Load a pipeline from a checkpoint folder, a registered pretrained name (e.g. "
        "diffkit/ddpm-digits) or a Hub repo, run it with a progress bar, and write its images as one PNG "
        "grid (or its audio as WAV). Options the pipeline does not take are an error; so is an input it "
        "needs that no option gives.",
    )
    parser.add_argument("source", metavar="PATH_OR_REPO_OR_PRETRAINED_NAME", help="what to load")
    for option in CALL_OPTIONS:
        parser.add_argument(option.flag, dest=option.dest, type=option.parse, metavar=option.metavar, help=option.help)
    parser.add_argument("--seed", type=seed_number, metavar="S", help="random seed (default: a random one, printed)")
    parser.add_argument("--scheduler", metavar="NAME", help="sample with this installed scheduler (e.g. DDIMScheduler)")
    parser.add_argument(
        "--pipeline",
        metavar="NAME",
        help="load the checkpoint into this installed pipeline class instead of the one it names (e.g. PNDMPipeline); "
        "without it, --image picks the checkpoint family's image-to-image pipeline and --mask-image its inpainting one "
        "when the named pipeline takes neither",
    )
    parser.add_argument("--device", default="auto", metavar="D", help="cpu, cuda, cuda:1, mps... (default: auto)")
    parser.add_argument("--dtype", metavar="T", help="float32, float16, bfloat16 or auto (default: float32)")
    parser.add_argument(
        "--local-files-only", action="store_true", help="load a Hub repo from the local Hub cache, never the network"
    )
    parser.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help=f"file to write (default: named after the source, {IMAGE_SUFFIX} or {AUDIO_SUFFIX}, in this folder)",
    )
    parser.set_defaults(handler=run)


def _pick_device(text: str) -> Any:
    """``--device`` as a ``torch.device`` that works here (``auto``: CUDA, then MPS, then the CPU)."""
    import torch

    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise CLIError(f"--device {text!r} is not a device; use cpu, cuda, cuda:N, mps or auto") from None
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError, AttributeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CLIError(f"--device {text!r} is not usable here: {first}") from None
    return device


def _pick_dtype(text: str | None) -> Any:
    if text is None:
        return None
    from ..dtypes import parse_dtype

    try:
        return parse_dtype(text, "--dtype")
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc)) from None


def _installed_class(kind: str, name: str | None, flag: str) -> type | None:
    """The installed class for ``--scheduler``/``--pipeline`` (an unknown name says what is installed)."""
    if name is None:
        return None
    if not name.strip():
        raise CLIError(f"{flag} is empty")
    try:
        return registry.get(kind, name)
    except ComponentNotFoundError as exc:
        raise CLIError(f"{flag}: {one_line(exc)}") from None


def _pipeline_for_inputs(args: argparse.Namespace, options: dict[str, Any]) -> type | None:
    """The pipeline of the checkpoint's family for the task the image options ask for, when the
    checkpoint's own pipeline does not take them (``--image``: image-to-image, ``--mask-image``:
    inpainting); ``None`` to load the class the checkpoint names.
    """
    import inspect

    from ..auto_pipeline import checkpoint_class_name, pipeline_for_task

    given = [name for name, _ in IMAGE_INPUTS if getattr(args, name) is not None]
    if not given:
        return None
    task = next(task for name, task in IMAGE_INPUTS if name in given)
    try:
        class_name = checkpoint_class_name(args.source, options)
        own = registry.get("pipeline", class_name) if class_name is not None else None
    except (DiffkitError, OSError, ValueError, TypeError):
        return None  # loading says what is wrong with the checkpoint
    if own is None or set(given) <= set(inspect.signature(own.__call__).parameters):
        return None
    if registry.entry("pipeline", class_name).meta.get("family") is None:
        return None  # no siblings to pick from: the call says which option it does not take
    flags = " and ".join("--" + name.replace("_", "-") for name in given)
    try:
        entry = pipeline_for_task(class_name, task)
    except ValueError as exc:
        raise CLIError(f"{class_name} does not take {flags}, and {one_line(exc)}; pick one with --pipeline NAME") from None
    return registry.get("pipeline", entry.name)


def _swap_scheduler(pipe: Any, scheduler_cls: type) -> Any:
    """A sibling of ``pipe`` sampling with ``scheduler_cls``, built from the current scheduler's config.

    The pipeline is constructed again (sharing every other component), so a pipeline that
    converts its scheduler on construction does so here too; when it refuses the requested
    class that is an error rather than a silent substitution.
    """
    from ..scheduler import compatible_schedulers

    pipeline_name = type(pipe).__name__
    current = pipe.components.get("scheduler")
    if current is None:
        raise CLIError(f"{pipeline_name} has no scheduler, so --scheduler does not apply")
    target = scheduler_cls.__name__
    if not scheduler_cls.is_compatible_with(current):  # diffusers' rule: the target lists what it accepts
        others = compatible_schedulers(current)
        raise CLIError(
            f"--scheduler {target} cannot take the config of {type(current).__name__}: {target} does not list it "
            f"as compatible (diffusers' _compatibles); compatible installed schedulers: {', '.join(others) or 'none'}"
        )
    scheduler = scheduler_cls.from_config(current.config)
    sibling = type(pipe)(**{**pipe.components, "scheduler": scheduler}, **pipe.settings)
    if not isinstance(sibling.scheduler, scheduler_cls):
        raise CLIError(
            f"{pipeline_name} samples only with {type(sibling.scheduler).__name__}, so --scheduler {target} "
            "does not apply to it"
        )
    sibling.set_progress_bar_config(**pipe._progress_bar_config)
    return sibling


def _call_arguments(pipe: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments for ``pipe(...)`` from the options, checked against its signature."""
    import inspect

    pipeline_name = type(pipe).__name__
    params = inspect.signature(pipe.__call__).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, Any] = {}
    for option in CALL_OPTIONS:
        value = getattr(args, option.dest)
        if value is None:
            continue
        target = next((p for p in option.parameters if p in params), option.parameters[0] if takes_any else None)
        if target is None:
            raise CLIError(
                f"{pipeline_name} does not take {option.flag} (its __call__ has no {' or '.join(option.parameters)})"
            )
        kwargs[target] = option.load(value, pipe) if option.load is not None else value
    if "generator" in params or takes_any:
        import torch

        kwargs["generator"] = torch.Generator("cpu").manual_seed(args.seed)
    missing = [
        name
        for name, p in params.items()
        if p.default is p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and name not in kwargs
    ]
    if missing:
        flags = {p: o.flag for o in CALL_OPTIONS for p in o.parameters}
        needs = ", ".join(f"{name} ({flags[name]})" if name in flags else repr(name) for name in missing)
        hint = (
            ""
            if all(name in flags for name in missing)
            else "; generate runs pipelines whose inputs it has options for"
        )
        raise CLIError(f"{pipeline_name} needs {needs}{hint}")
    return kwargs


def _default_of(pipe: Any, parameter: str) -> Any:
    """The default value of a ``__call__`` parameter, or ``None``."""
    import inspect

    param = inspect.signature(pipe.__call__).parameters.get(parameter)
    return None if param is None or param.default is param.empty else param.default


def run(args: argparse.Namespace) -> int:
    """``diffkit generate SOURCE``: load, run, write a PNG grid (or WAV) and say what was written."""
    import random
    import time

    if not args.source.strip():
        raise CLIError("PATH_OR_REPO_OR_PRETRAINED_NAME is empty")
    output = check_output(args.output.expanduser() if args.output is not None else None)
    dtype = _pick_dtype(args.dtype)
    recommended = _recommended(args.source, args.scheduler)
    scheduler_cls = _installed_class("scheduler", args.scheduler, "--scheduler")
    if recommended is not None and recommended.scheduler is not None:
        scheduler_cls = _installed_class("scheduler", recommended.scheduler, f"the scheduler {args.source} recommends")
    pipeline_cls = _installed_class("pipeline", args.pipeline, "--pipeline")
    device = _pick_device(args.device)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)

    from ..pipeline import Pipeline

    started = time.perf_counter()
    options: dict[str, Any] = {} if dtype is None else {"torch_dtype": dtype}
    if args.local_files_only:
        options["local_files_only"] = True
    if pipeline_cls is None:
        pipeline_cls = _pipeline_for_inputs(args, options)
    try:
        # only the sampling bar: an error after loading stays a single line
        with env_var("DIFFKIT_DISABLE_PROGRESS", "1"):
            pipe = (pipeline_cls or Pipeline).from_pretrained(args.source, **options)
    except (DiffkitError, OSError, ValueError, TypeError) as exc:  # a missing plugin too: bad input, exit 2
        raise CLIError(f"cannot load {args.source!r}: {one_line(exc)}") from None
    if scheduler_cls is not None:
        pipe = _swap_scheduler(pipe, scheduler_cls)
    kwargs = _call_arguments(pipe, args)
    if recommended is not None:
        kwargs = _with_defaults(pipe, kwargs, recommended.call_defaults)
    pipe.set_progress_bar_config(
        **{**pipe._progress_bar_config, "desc": _describe_run(pipe, kwargs, recommended is not None)}
    )
    expected = declared_kind(pipe)
    if output is not None and expected is not None and suffix_kind(output) != expected:
        suffix = IMAGE_SUFFIX if expected == "image" else AUDIO_SUFFIX
        raise CLIError(
            f"{type(pipe).__name__} makes {expected}: --output must be a file such as {output.with_suffix(suffix)}"
        )
    pipe.to(device)
    loaded = time.perf_counter()
    import torch

    try:
        with torch.inference_mode():
            result = pipe(**kwargs)
    except (ValueError, TypeError) as exc:
        message = f"{type(pipe).__name__} refused the arguments: {one_line(exc)}"
        if scheduler_cls is not None:
            # e.g. DDPMPipeline passes generator= to step(), which PNDMScheduler does not take
            family = scheduler_cls.__name__.removesuffix("Scheduler") + "Pipeline"
            hint = f"; try --pipeline {family}" if registry.has("pipeline", family) else ""
            message = f"{type(pipe).__name__} cannot sample with {scheduler_cls.__name__}: {one_line(exc)}{hint}"
        raise CLIError(message) from None
    except RuntimeError as exc:
        raise CLIError(f"{type(pipe).__name__} failed on {device}: {one_line(exc)}", EXIT_MISSING) from None
    seconds = time.perf_counter() - loaded

    kind, payload = classify(result, type(pipe).__name__)
    suffix = IMAGE_SUFFIX if kind == "image" else AUDIO_SUFFIX
    path = (output or default_output(args.source, suffix)).resolve()
    if suffix_kind(path) != kind:  # the annotation did not tell: keep the work, fix the name
        fixed = path.with_suffix(suffix)
        print(f"diffkit generate: note: {type(pipe).__name__} made {kind}, so it goes to {fixed}", file=sys.stderr)
        path = fixed
    if kind == "image":
        paths, what = [path], write_images(payload, path)
    else:
        paths, what = write_audio(payload, path, sample_rate_of(pipe))

    for path in paths:
        print(path)
    print(
        f"wrote {what}, {size_label(paths)}: {_describe_run(pipe, kwargs, recommended is not None)}, "
        f"seed {args.seed}, on {device}; {seconds:.1f} s (loading {loaded - started:.1f} s)"
    )
    return EXIT_OK


def _recommended(source: str, scheduler_option: str | None) -> PretrainedDefaults | None:
    """What the package registering pretrained ``source`` recommends, unless ``--scheduler`` picks another.

    Its call defaults go with its scheduler, so a run with another scheduler uses neither.
    """
    if not registry.has("pretrained", source):
        return None
    entry = registry.entry("pretrained", source)
    try:
        recommended = PretrainedDefaults.from_meta(source, entry.dist, entry.meta)
    except PluginError as exc:
        raise CLIError(str(exc), EXIT_MISSING) from None
    if scheduler_option is not None and scheduler_option != recommended.scheduler:
        return None
    if recommended.scheduler is None and not recommended.call_defaults:
        return None
    return recommended


def _with_defaults(pipe: Any, kwargs: dict[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` plus each recommended default the options left out and ``pipe.__call__`` takes."""
    import inspect

    params = inspect.signature(pipe.__call__).parameters
    return {**{k: v for k, v in defaults.items() if k in params}, **kwargs}


def _describe_run(pipe: Any, kwargs: dict[str, Any], recommended: bool) -> str:
    """``DDPMPipeline with DDIMScheduler, 50 steps`` (what the progress bar and the summary say)."""
    scheduler = pipe.components.get("scheduler")
    steps = kwargs.get("num_inference_steps", _default_of(pipe, "num_inference_steps"))
    text = type(pipe).__name__ + (f" with {type(scheduler).__name__}" if scheduler is not None else "")
    text += f", {steps} steps" if isinstance(steps, int) else ""
    return text + (" (recommended)" if recommended else "")
