"""``AutoPipelineForText2Image``, ``AutoPipelineForImage2Image``, ``AutoPipelineForInpainting``.

Each maps a checkpoint, or a loaded pipeline, to the pipeline of the same family that does its
task. Pipelines declare their task and family when they register (``register(name, target,
task=..., family=...)``, see :class:`diffkit.hookspecs.PipelineRole`), so the core maps names
through the registry without knowing any family: ``from_pretrained`` reads the checkpoint's
``_class_name``, finds its family and loads that family's pipeline for the task;
``from_pipe`` builds that pipeline on the very component objects of a loaded one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ._registry import Entry, registry
from .checkpoint import MODEL_INDEX, parse_model_index, read_json
from .hookspecs import IMAGE_TO_IMAGE, INPAINTING, TEXT_TO_IMAGE, PipelineRole

if TYPE_CHECKING:
    from .pipeline import Pipeline


def _role(entry: Entry) -> PipelineRole:
    return PipelineRole.from_meta(entry.name, entry.dist, entry.meta)


def pipeline_for_task(class_name: str, task: str, *, where: str = "") -> Entry:
    """The registration of the pipeline that does ``task`` in the family of pipeline ``class_name``.

    ``class_name`` itself when it does ``task``. Raises ``ValueError`` when the class declares no
    family, or when no installed pipeline (or more than one) does ``task`` in it.
    """
    source = registry.entry("pipeline", class_name, context=where)
    role = _role(source)
    if role.task == task:
        return source
    if role.family is None:
        raise ValueError(
            f"{class_name} ({source.dist}) declares no family, so there is no {task} pipeline to map it to; "
            f"load the pipeline class you want directly (its plugin can declare family=... when it registers)"
        )
    matches = [e for e in registry.entries("pipeline") if _role(e) == PipelineRole(task, role.family)]
    if len(matches) == 1:
        return matches[0]
    family = sorted(f"{e.name} ({_role(e).task or 'no task'})" for e in registry.entries("pipeline")
                    if _role(e).family == role.family)
    if not matches:
        raise ValueError(
            f"no installed pipeline does {task} for the {role.family!r} family of {class_name}; "
            f"its pipelines: {', '.join(family)}"
        )
    names = ", ".join(f"{e.name} ({e.dist})" for e in matches)
    raise ValueError(f"more than one installed pipeline does {task} for the {role.family!r} family: {names}; "
                     "load the one you want directly")


def checkpoint_class_name(source: str | os.PathLike[str], options: dict[str, Any]) -> str | None:
    """The ``_class_name`` of a checkpoint folder, registered pretrained name or Hub repo (``model_index.json``
    only is fetched); ``None`` when ``source`` is none of these (loading then says why)."""
    from .hub import download_files, hub_kwargs, is_repo_id
    from .pipeline_loading import _pretrained_path

    folder = _pretrained_path(str(source)) if not isinstance(source, os.PathLike) else None
    if folder is None and Path(source).is_dir():
        folder = Path(source)
    if folder is None:
        if isinstance(source, os.PathLike) or not is_repo_id(str(source)):
            return None
        hub = hub_kwargs(**{k: options[k] for k in ("revision", "cache_dir", "force_download", "local_files_only",
                                                     "token", "proxies") if k in options})
        folder = download_files(str(source), [MODEL_INDEX], **hub)
    index = folder / MODEL_INDEX
    class_name, _, _ = parse_model_index(read_json(index, "model_index.json"), index)
    if not isinstance(class_name, str):
        raise ValueError(
            f"{index}: _class_name {class_name} is a custom pipeline from a code file; the AutoPipeline classes map "
            "only registered pipelines; load it with DiffusionPipeline.from_pretrained(..., trust_remote_code=True)"
        )
    return class_name


class AutoPipeline:
    """Base of the task classes; never instantiated: use :meth:`from_pretrained` or :meth:`from_pipe`."""

    task: ClassVar[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            f"{type(self).__name__} is not built directly; use {type(self).__name__}.from_pretrained(path) "
            f"or {type(self).__name__}.from_pipe(pipe)"
        )

    @classmethod
    def pipeline_class(cls, class_name: str) -> type[Pipeline]:
        """The pipeline class that does this task in the family of pipeline ``class_name``."""
        entry = pipeline_for_task(class_name, cls.task, where=cls.__name__)
        return registry.get("pipeline", entry.name)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike[str], **kwargs: Any) -> Pipeline:
        """Load a checkpoint into its family's pipeline for this task (options as ``DiffusionPipeline.from_pretrained``).

        A text-to-image checkpoint loads as the image-to-image pipeline of its family, and so on:
        the checkpoint's ``_class_name`` says the family. Only ``model_index.json`` is read (or
        fetched) before the class is known; the components follow as that class loads them.
        """
        from .pipeline import Pipeline

        class_name = checkpoint_class_name(pretrained_model_name_or_path, kwargs)
        if class_name is None:  # not a checkpoint: the loader gives its usual error
            return Pipeline.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return cls.pipeline_class(class_name).from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def from_pipe(cls, pipeline: Pipeline, **kwargs: Any) -> Pipeline:
        """This task's pipeline built on ``pipeline``'s component objects (no weights are copied).

        ``kwargs`` replace components (``scheduler=...``) or settings (``requires_safety_checker``).
        Components the new class does not take are left out; optional ones it takes and
        ``pipeline`` lacks are ``None``.
        """
        target = cls.pipeline_class(type(pipeline).__name__)
        expected = target.component_names()
        params = set(target.parameter_names())
        unknown = sorted(set(kwargs) - set(expected) - params)
        if unknown:
            raise TypeError(
                f"{cls.__name__}.from_pipe: {target.__name__} takes no {', '.join(unknown)}; it takes the components "
                f"{', '.join(expected)} and the settings {', '.join(sorted(params)) or 'none'}"
            )
        have = pipeline.components
        components: dict[str, Any] = {}
        for name in expected:
            if name in kwargs:
                components[name] = kwargs[name]
            elif name in have:
                components[name] = have[name]
            elif name in target.optional_components:
                components[name] = None
            else:
                raise ValueError(
                    f"{cls.__name__}.from_pipe: {target.__name__} needs a {name!r} component that "
                    f"{type(pipeline).__name__} does not have; pass {name}=..."
                )
        settings = {k: v for k, v in pipeline.settings.items() if k in params}
        settings.update({k: v for k, v in kwargs.items() if k in params})
        sibling = target(**components, **settings)
        sibling._index_meta.update(pipeline._index_meta)
        sibling.set_progress_bar_config(**pipeline._progress_bar_config)
        return sibling


class AutoPipelineForText2Image(AutoPipeline):
    """The text-to-image pipeline of a checkpoint's family (``StableDiffusionPipeline`` for SD)."""

    task = TEXT_TO_IMAGE


class AutoPipelineForImage2Image(AutoPipeline):
    """The image-to-image pipeline of a checkpoint's family (``StableDiffusionImg2ImgPipeline`` for SD)."""

    task = IMAGE_TO_IMAGE


class AutoPipelineForInpainting(AutoPipeline):
    """The inpainting pipeline of a checkpoint's family (``StableDiffusionInpaintPipeline`` for SD)."""

    task = INPAINTING
