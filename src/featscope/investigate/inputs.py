"""What every investigation starts from: its settings, its models, its labels and its real images."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from featscope.datasets import ClassFolderDataset, ImageItem, image_items, safe_id
from featscope.errors import FeatscopeError, suggest
from featscope.extractors.base import Extractor
from featscope.investigate.cores import _label_name
from featscope.objectives import class_index
from featscope.orchestration import Item, unique_ids
from featscope.settings import Settings, resolve

if TYPE_CHECKING:  # the backbones import diffusers (seconds): only when a run starts
    from featscope.backbones.base import Backbone

S = TypeVar("S", bound=Settings)
C = TypeVar("C", bound=Settings)


# -- settings --------------------------------------------------------------------------------------
def method_settings(
    cls: type[S],
    settings: S | None,
    overrides: Mapping[str, Any],
    *,
    method: str,
    solver: type[C] | None = None,
    config: C | None = None,
) -> tuple[S, C | None]:
    """(the method's options, the solver's settings) of a call: ``settings`` (a ``cls``; None: its defaults) and
    ``config`` (a ``solver``; None: ``solver()``), the keyword ``overrides`` on top, each to the dataclass that has
    the name; both validated. Unknown names are an error that lists the known ones."""
    own = [f.name for f in fields(cls)]
    theirs = [f.name for f in fields(solver)] if solver is not None else []
    unknown = sorted(set(overrides) - set(own) - set(theirs))
    if unknown:
        known = own + theirs
        raise FeatscopeError(
            f"unknown setting {unknown[0]!r} for {method}{suggest(unknown[0], known)}; known: {', '.join(known)}"
        )
    options = resolve(cls, settings, {k: v for k, v in overrides.items() if k in own})
    if solver is None:
        return options, None
    return options, resolve(solver, config, {k: v for k, v in overrides.items() if k in theirs})


def endtoend_settings(cls: type[S], settings: S | None, overrides: Mapping[str, Any], *, method: str, config: Any,
                      backbone: str | Backbone, defaults: str | None = None) -> tuple[S, Any]:  # fmt: skip
    """:func:`method_settings` with the end-to-end solver, whose defaults (``config`` None) are the backbone
    family's for the method ``defaults`` (:func:`~featscope.solvers.configs.endtoend_defaults`, e.g. ``neuron``)."""
    from featscope.solvers.configs import EndToEndConfig, endtoend_defaults

    if config is None:
        config = endtoend_defaults(backbone if isinstance(backbone, str) else backbone.spec, defaults)
    return method_settings(cls, settings, overrides, method=method, solver=EndToEndConfig, config=config)


# -- models ----------------------------------------------------------------------------------------
def load_backbone(backbone: str | Backbone, device: torch.device) -> Backbone:
    """A backbone spec loaded (or a loaded backbone) on ``device``."""
    from featscope.backbones import load_backbone as load

    model = load(backbone, device=device) if isinstance(backbone, str) else backbone
    return model.to(device)


def load_network(net: str | Extractor, device: torch.device, weights: str | None = None) -> Extractor:
    """A network spec loaded (or a loaded network) on ``device``, in eval mode."""
    from featscope.extractors import load_extractor

    model = load_extractor(net, weights=weights, device=device) if isinstance(net, str) else net
    return model.to(device).eval()


def needs_prompts(model: Backbone, what: str) -> None:
    """Fail unless the backbone takes prompts: ``what`` (e.g. ``word swap needs``) a backbone with prompts."""
    if not model.has_prompts:
        raise FeatscopeError(f"{what} a backbone with prompts; {model.spec} has none")


def needs_inversion_guidance(guidance_scale: float, what: str) -> None:
    """Fail unless ``guidance_scale`` > 1: ``what`` (e.g. ``counterfactuals``) start from a null-text inversion,
    which fits the unconditional embedding of classifier-free guidance."""
    if guidance_scale <= 1.0:
        raise FeatscopeError(f"{what} start from a null-text inversion, which needs guidance_scale > 1")


def template(prompt_template: str | None, backbone: Backbone) -> str:
    """``prompt_template``, else ``{label}`` for the world (its captions are attribute words) and DiG-IN's
    ``a photograph of a {label}`` for the others."""
    if prompt_template is not None:
        return prompt_template
    return "{label}" if backbone.spec.startswith("world:") else "a photograph of a {label}"


# -- labels and images -----------------------------------------------------------------------------
def parse_label(text: int | str) -> int | str:
    """A class given on the command line: digits are an index, anything else a name."""
    return int(text) if isinstance(text, str) and text.strip().isdigit() else text


def target_list(target_label: int | str | Sequence[int | str]) -> list[int | str]:
    """The target classes of a counterfactual (one or several); none is an error."""
    targets = [target_label] if isinstance(target_label, (int, str)) else list(target_label)
    if not targets:
        raise FeatscopeError("no target class given; name the class the image should become")
    return targets


def image_list(images) -> list[ImageItem]:
    """Image files, or one dataset folder (class per sub-folder, every image), or a :class:`ClassFolderDataset`
    (which selects classes and images of a folder), as items."""
    if isinstance(images, ClassFolderDataset):
        return list(images)
    files = [images] if isinstance(images, (str, Path)) else list(images)
    single = Path(files[0]) if len(files) == 1 else None
    if single is not None and (single.is_dir() or not single.suffix):  # a folder (or a missing one)
        return list(ClassFolderDataset(files[0]))
    if not files:
        raise FeatscopeError("no images given; pass image files or a dataset folder")
    return image_items(files)


def class_items(network: Extractor, entries: list[ImageItem], start_label: int | str | None, targets: list,
                check: Callable[[ImageItem, int | str], object] | None = None) -> list[Item]:  # fmt: skip
    """One item ``<image id>_to_<target>`` per image and target class (payload: ``entry``, ``start``, ``target``);
    a missing or unknown class fails before any work, and so does ``check(entry, start)``. The start class is
    ``start_label``, else the image's dataset class."""
    items = []
    for entry, item_id in zip(entries, unique_ids([e.item_id for e in entries]), strict=True):
        start = start_label if start_label is not None else (entry.class_name or None)
        if start is None:
            raise FeatscopeError(f"no start class for {str(entry.path)!r}; give the start label")
        class_index(network, start)  # an unknown class fails here
        if check is not None:
            check(entry, start)
        for target in targets:
            class_index(network, target)
            payload = {"entry": entry, "start": start, "target": target}
            items.append(Item(safe_id(f"{item_id}_to_{_label_name(network, target)}"), payload))
    return items
