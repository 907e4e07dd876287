"""The methods a study can run: one registry entry each (its keys, its settings, how to run one job).

Adding a method is one more entry in ``METHODS``: the keys of its job entries (``Field``), the dataclass of its
solver settings (for ``settings:`` and ``sweep:``), a check of one job, the call that writes the job's folder
and the headline numbers of its ``metrics.json`` for the summary.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from featscope.errors import FeatscopeError, suggest
from featscope.orchestration import summary_row
from featscope.ranks import Ranks
from featscope.study.fields import (
    BACKBONE,
    SEEDS,
    Field,
    choice,
    existing_file,
    file_stem,
    flag,
    integer,
    label,
    network_spec,
    number_list,
    optional_file,
    optional_text,
    spec_short,
    text,
    text_list,
)

Run = Callable[[dict, dict, Path, str, bool], None]  # (params, settings, job folder, device, quiet)


@dataclass(frozen=True)
class Method:
    """A method of the registry; ``items`` marks featscope.investigate functions (one item per job)."""

    doc: str
    fields: dict[str, Field]
    settings: Callable[[], type]  # the dataclass of the solver settings (names and types of settings:/sweep:)
    config: Callable[[dict], Any]  # its instance a job starts from, for the job's params (e.g. a preset)
    run: Run
    headline: Callable[[dict], dict]
    check: Callable[[dict, dict], None] = lambda params, settings: None
    items: bool = False


def check_settings(config: Any, settings: dict) -> None:
    """Types of ``settings`` against the fields of the solver dataclass ``config``, then its own validation."""
    types = {f.name: str(f.type) for f in fields(config)}
    for key, value in settings.items():
        if not _fits(value, types[key]):
            raise FeatscopeError(f"setting {key} must be {types[key].replace(' | None', ' or null')}, not {value!r}")
    config.with_overrides(**settings).validate()


def _fits(value: Any, annotation: str) -> bool:
    kinds = {k.strip() for k in annotation.split("|")}
    if value is None:
        return "None" in kinds
    if isinstance(value, bool):
        return "bool" in kinds
    if isinstance(value, int):
        return bool(kinds & {"int", "float"})
    return (isinstance(value, float) and "float" in kinds) or (isinstance(value, str) and "str" in kinds)


def given(params: dict, *keys: str) -> dict:
    """The ``keys`` of ``params`` that are set (None leaves the method's own default)."""
    return {k: params[k] for k in keys if params.get(k) is not None}


# -- decode (universal solver) ---------------------------------------------------------------------
def _universal() -> type:
    from featscope.solvers.configs import UniversalConfig

    return UniversalConfig


def _decode_config(params: dict):
    from featscope.solvers.configs import preset

    return preset(params["preset"])


def _decode_check(params: dict, settings: dict) -> None:
    if (params["targets"] is None) == (params["texts"] is None):
        raise FeatscopeError("give targets (image or feature files) or texts, one of the two")


def _decode_run(params: dict, settings: dict, folder: Path, device: str, quiet: bool) -> None:
    from featscope.decode_run import decode

    decode(
        params["targets"] or (),
        text=params["texts"] or (),
        backbone=params["backbone"],
        extractor=params["extractor"],
        preset=params["preset"],
        num_samples=params["num_samples"],
        seed=params["seeds"],
        save_every=params["save_every"],
        out=folder,
        overwrite=True,  # only jobs without metrics.json run: an old folder holds at most an error.json
        device=device,
        quiet=quiet,
        **settings,
    )


_decode_headline = summary_row(
    "best distance = summary.mean_best_distance; final distance = summary.mean_final_distance; "
    "best cosine = summary.mean_best_cosine; evaluations = summary.network_evaluations"
)


def _presets() -> Callable[[Any, Path], str]:
    def parse(value: Any, root: Path) -> str:
        from featscope.solvers.configs import PRESETS

        return choice(*PRESETS)(value, root)

    return parse


DECODE = Method(
    doc="feature decoding with the universal solver (featscope.decode): one target per job",
    fields={
        "backbone": BACKBONE,
        "extractor": Field(network_spec, "network(s) under study", "world:shape-net", axis=True, prefix="",
                           short=spec_short),
        "seeds": SEEDS,
        "targets": Field(existing_file, "target image or feature file(s)", None, axis=True, prefix="target",
                         short=file_stem),
        "texts": Field(text, "text target(s), CLIP-family networks only", None, axis=True, prefix="text",
                       short=lambda t: t[:40]),
        "preset": Field(_presets(), "solver preset(s): reference, fast, faster, refine", "fast", axis=True),
        "num_samples": Field(integer(1), "images per target (seeds seed..seed+N-1)", 1),
        "save_every": Field(integer(0), "save x0 estimates every N steps into steps/ (0: off)", 0),
    },
    settings=_universal,
    config=_decode_config,
    run=_decode_run,
    headline=_decode_headline,
    check=_decode_check,
)  # fmt: skip


# -- investigations (end-to-end solver), one item per job -------------------------------------------
def _endtoend() -> type:
    from featscope.solvers.configs import EndToEndConfig

    return EndToEndConfig


def _one_item(folder: Path, call: Callable[[Path, Ranks], dict | None]) -> None:
    """Run an investigation of one item in this process alone (``Ranks()``, whatever torchrun's ranks) into a
    hidden work folder, then move the finished item into ``folder``."""
    work = folder.parent / f".{folder.name}.work"
    summary = call(work, Ranks())
    (item,) = summary["results"]
    if folder.exists():  # an earlier failure's error.json
        shutil.rmtree(folder)
    os.replace(work / item, folder)
    shutil.rmtree(work)


def _common(params: dict, device: str, quiet: bool) -> dict:
    return {"backbone": params["backbone"], "seed": params["seeds"], "device": device, "quiet": quiet}


def _difference_run(params: dict, settings: dict, folder: Path, device: str, quiet: bool) -> None:
    from featscope import investigate

    classes = [investigate.parse_label(params["classes"])]
    extra = given(params, "prompt_template", "loss")
    _one_item(
        folder,
        lambda out, ranks: investigate.difference(
            params["net1"],
            params["net2"],
            classes,
            out=out,
            ranks=ranks,
            **_common(params, device, quiet),
            **extra,
            **settings,
        ),
    )


def _neuron_run(params: dict, settings: dict, folder: Path, device: str, quiet: bool) -> None:
    from featscope import investigate

    extra = given(params, "layer", "prompt", "maximise")
    _one_item(
        folder,
        lambda out, ranks: investigate.neuron(
            params["net"],
            channels=[params["channels"]],
            out=out,
            ranks=ranks,
            **_common(params, device, quiet),
            **extra,
            **settings,
        ),
    )


def _counterfactual_check(params: dict, settings: dict) -> None:
    from featscope.investigate.cores import PUBLISHED_REGULARIZERS, PUBLISHED_WEIGHTS, REGULARIZERS

    if settings.get("guidance_scale", 3.0) <= 1.0:
        raise FeatscopeError("counterfactuals start from a null-text inversion, which needs guidance_scale > 1")
    regularizers = params["regularizers"] if params["regularizers"] is not None else PUBLISHED_REGULARIZERS
    weights = params["regularizer_weights"] if params["regularizer_weights"] is not None else PUBLISHED_WEIGHTS
    for name in regularizers:
        if name not in REGULARIZERS:
            known = ", ".join(REGULARIZERS)
            raise FeatscopeError(f"unknown regularizer {name!r}{suggest(name, REGULARIZERS)}; known: {known}")
    if len(regularizers) != len(weights):
        raise FeatscopeError(f"{len(regularizers)} regularizers but {len(weights)} regularizer_weights; give one each")


def _counterfactual_run(params: dict, settings: dict, folder: Path, device: str, quiet: bool) -> None:
    from featscope import investigate

    keys = ("prompt", "prompt_template", "regularizers", "regularizer_weights", "mask", "mask_postprocess", "loss")
    extra = given(params, *keys, "inner_steps")
    _one_item(
        folder,
        lambda out, ranks: investigate.counterfactual(
            params["net"],
            [params["images"]],
            investigate.parse_label(params["start"]),
            investigate.parse_label(params["target_classes"]),
            out=out,
            ranks=ranks,
            **_common(params, device, quiet),
            **extra,
            **settings,
        ),
    )


def _difference_headline(metrics: dict) -> dict:
    from featscope.investigate import difference_row

    return difference_row(metrics)


def _neuron_headline(metrics: dict) -> dict:
    from featscope.investigate import neuron_row

    return neuron_row(metrics)


def _counterfactual_headline(metrics: dict) -> dict:
    from featscope.investigate import counterfactual_row

    return counterfactual_row(metrics)


NET = Field(network_spec, "network(s) under study (a classifier)", axis=True, prefix="", short=spec_short)

# what the end-to-end methods (difference, neuron, counterfactual) share: their settings, one item per image
END_TO_END = {"settings": _endtoend, "config": lambda params: _endtoend()(), "items": True}

DIFFERENCE = Method(
    doc="images net1 sees as a class and net2 does not (featscope.investigate.difference): one class per job",
    fields={
        "backbone": BACKBONE,
        "net1": Field(network_spec, "network(s) that should recognise the class", axis=True, prefix="",
                      short=spec_short),
        "net2": Field(network_spec, "network(s) that should not", axis=True, prefix="vs", short=spec_short),
        "classes": Field(label, "class name(s) or index(es) of net1", axis=True, prefix="class"),
        "seeds": SEEDS,
        "loss": Field(choice("conf", "log_conf", "logit_margin"), "conf (published), log_conf or logit_margin", None),
        "prompt_template": Field(optional_text, "prompt with {label} (default: '{label}' on the world)", None),
    },
    **END_TO_END,
    run=_difference_run,
    headline=_difference_headline,
)  # fmt: skip

NEURON = Method(
    doc="images that raise one channel of a layer (featscope.investigate.neuron): one channel per job",
    fields={
        "backbone": BACKBONE,
        "net": NET,
        "channels": Field(integer(0), "channel(s) to visualise", axis=True, prefix="ch"),
        "seeds": SEEDS,
        "layer": Field(optional_text, "layer name (default: the input of the last linear layer)", None),
        "maximise": Field(flag, "raise the channel (false: lower it)", None),
        "prompt": Field(optional_text, "prompt of the plain samples (default: empty)", None),
    },
    **END_TO_END,
    run=_neuron_run,
    headline=_neuron_headline,
)

COUNTERFACTUAL = Method(
    doc="real images changed toward a class (featscope.investigate.counterfactual): one image and class per job",
    fields={
        "backbone": BACKBONE,
        "net": NET,
        "images": Field(existing_file, "real image file(s)", axis=True, prefix="image", short=file_stem),
        "start": Field(label, "class of the images"),
        "target_classes": Field(label, "class(es) the image should become", axis=True, prefix="to"),
        "seeds": SEEDS,
        "prompt": Field(optional_text, "caption ({label} = start class; default: IMAGE.txt or template)", None),
        "prompt_template": Field(optional_text, "caption from the start class, with {label}", None),
        "regularizers": Field(text_list, "regularizer names (default: published)", None),
        "regularizer_weights": Field(number_list, "one weight per regularizer (default: 25, 250)", None),
        "mask": Field(optional_file, "foreground mask PNG (white = object)", None),
        "mask_postprocess": Field(text_list, "e.g. [erosion_3, dilation_20, blur_45_30]", None),
        "loss": Field(choice("ce", "conf", "log_conf"), "class loss (default: ce)", None),
        "inner_steps": Field(integer(0), "null-text inversion steps per DDIM step (default: 10)", None),
    },
    **END_TO_END,
    run=_counterfactual_run,
    headline=_counterfactual_headline,
    check=_counterfactual_check,
)

METHODS: dict[str, Method] = {
    "decode": DECODE,
    "difference": DIFFERENCE,
    "neuron": NEURON,
    "counterfactual": COUNTERFACTUAL,
}
