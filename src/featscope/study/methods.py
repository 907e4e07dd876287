"""The methods a study can run: one registry entry each (its keys, its settings, how to run one job).

Adding a method is one more entry in ``METHODS``: the keys of its job entries (``Field``), the dataclass of its
solver settings (for ``settings:`` and ``sweep:``), a check of one job, the call that writes the job's folder
and the headline numbers of its ``metrics.json`` for the summary.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from featscope.errors import FeatscopeError, suggest
from featscope.investigate.settings import (
    CounterfactualSettings,
    DifferenceSettings,
    NeuronImagesSettings,
    NeuronSettings,
    WordSwapSettings,
)
from featscope.orchestration import summary_row
from featscope.ranks import Ranks
from featscope.study.fields import (
    BACKBONE,
    SEEDS,
    Field,
    choice,
    existing_file,
    file_stem,
    integer,
    knob_fields,
    label,
    network_spec,
    optional_text,
    spec_short,
    text,
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
    lists = [k[6:].split(",")[0] for k in kinds if k.startswith("tuple[")]  # tuple[float, ...]: a list of floats
    if lists and isinstance(value, (list, tuple)):
        return all(_fits(v, lists[0]) for v in value)
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


# -- investigations, one item per job -------------------------------------------------------------
ONE_ITEM = ("samples_per_class", "samples")  # a job is one item: more samples of a job entry are more seeds


def _endtoend() -> type:
    from featscope.solvers.configs import EndToEndConfig

    return EndToEndConfig


def _word_swap_config() -> type:
    from featscope.solvers.configs import WordSwapConfig

    return WordSwapConfig


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


def _options(params: dict, cls: type) -> dict:
    """The knobs of the settings dataclass ``cls`` that the job sets (the others keep the method's defaults)."""
    return given(params, *(f.name for f in fields(cls) if f.name in params))


def _check_options(params: dict, cls: type, settings: dict | None = None, what: str | None = None) -> None:
    """The job's knobs of ``cls`` validated together; with ``what``, the solver ``settings`` start an inversion
    (guidance_scale > 1) and the regularizers are known ones."""
    options = cls().with_overrides(**_options(params, cls))
    options.validate()
    if what is None:
        return
    from featscope.investigate.cores import REGULARIZERS
    from featscope.investigate.inputs import needs_inversion_guidance

    needs_inversion_guidance((settings or {}).get("guidance_scale", 3.0), what)
    for name in options.regularizers:
        if name not in REGULARIZERS:
            known = ", ".join(REGULARIZERS)
            raise FeatscopeError(f"unknown regularizer {name!r}{suggest(name, REGULARIZERS)}; known: {known}")


def _difference_run(params: dict, settings: dict, folder: Path, device: str, quiet: bool) -> None:
    from featscope import investigate

    classes = [investigate.parse_label(params["classes"])]
    options = _options(params, DifferenceSettings)
    _one_item(
        folder,
        lambda out, ranks: investigate.difference(
            params["net1"], params["net2"], classes, out=out, ranks=ranks, **_common(params, device, quiet),
            **options, **settings,
        ),
    )  # fmt: skip


def _neuron_check(params: dict, settings: dict) -> None:
    images = params["images"] is not None
    mine, other = (NeuronImagesSettings, NeuronSettings) if images else (NeuronSettings, NeuronImagesSettings)
    stray = sorted(set(_options(params, other)) - {f.name for f in fields(mine)})
    if stray:
        where = "without images" if images else "with images"
        raise FeatscopeError(f"{stray[0]} applies to neuron jobs {where} only")
    _check_options(params, mine, settings, "neuron counterfactuals" if images else None)


def _neuron_run(params: dict, settings: dict, folder: Path, device: str, quiet: bool) -> None:
    from featscope import investigate

    common = {"layer": params["layer"], "channels": [params["channels"]], **_common(params, device, quiet)}
    if params["images"] is not None:
        options = _options(params, NeuronImagesSettings)
        call = functools.partial(investigate.neuron_images, params["net"], [params["images"]])
    else:
        options = _options(params, NeuronSettings)
        call = functools.partial(investigate.neuron, params["net"])
    _one_item(folder, lambda out, ranks: call(out=out, ranks=ranks, **common, **options, **settings))


def _image_change_run(method: str, options: type, seeded: bool) -> Callable[..., None]:
    """The run of a job that changes one real image toward a class (``featscope.investigate``'s ``method``, its
    knobs ``options``; ``seeded``: it takes the job's seed)."""

    def run(params: dict, settings: dict, folder: Path, device: str, quiet: bool) -> None:
        from featscope import investigate

        common = _common(params, device, quiet) if seeded else {"backbone": params["backbone"], "device": device,
                                                                 "quiet": quiet}  # fmt: skip
        labels = investigate.parse_label(params["start"]), investigate.parse_label(params["target_classes"])
        call = getattr(investigate, method)
        _one_item(folder, lambda out, ranks: call(params["net"], [params["images"]], *labels, out=out, ranks=ranks,
                                                  **common, **_options(params, options), **settings))  # fmt: skip

    return run


def _headline(name: str) -> Callable[[dict], dict]:
    """The headline of an investigation item: ``featscope.investigate``'s summary row ``name``."""

    def headline(metrics: dict) -> dict:
        from featscope import investigate

        return getattr(investigate, name)(metrics)

    return headline


NET = Field(network_spec, "network(s) under study (a classifier)", axis=True, prefix="", short=spec_short)
IMAGES = Field(existing_file, "real image file(s)", axis=True, prefix="image", short=file_stem)
START = Field(label, "class of the images")
TARGETS = Field(label, "class(es) the image should become", axis=True, prefix="to")

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
        **knob_fields(DifferenceSettings, exclude=ONE_ITEM),
    },
    **END_TO_END,
    run=_difference_run,
    headline=_headline("difference_row"),
    check=lambda params, settings: _check_options(params, DifferenceSettings),
)  # fmt: skip

NEURON = Method(
    doc="images that raise one channel of a layer (featscope.investigate.neuron; with images, "
    "featscope.investigate.neuron_images): one channel (and image) per job",
    fields={
        "backbone": BACKBONE,
        "net": NET,
        "channels": Field(integer(0), "channel(s) to visualise", axis=True, prefix="ch"),
        "images": Field(existing_file, "real image file(s) whose channel is changed (neuron counterfactuals)", None,
                        axis=True, prefix="image", short=file_stem),
        "seeds": SEEDS,
        "layer": Field(optional_text, "layer name (default: the input of the last linear layer)", None),
        **knob_fields(NeuronSettings, exclude=ONE_ITEM),
        **knob_fields(NeuronImagesSettings),
    },
    **END_TO_END,
    run=_neuron_run,
    headline=_headline("neuron_row"),
    check=_neuron_check,
)  # fmt: skip

# the jobs that change one real image toward a class: what they are given
IMAGE_CHANGE = {"backbone": BACKBONE, "net": NET, "images": IMAGES, "start": START, "target_classes": TARGETS}

COUNTERFACTUAL = Method(
    doc="real images changed toward a class (featscope.investigate.counterfactual): one image and class per job",
    fields={**IMAGE_CHANGE, "seeds": SEEDS, **knob_fields(CounterfactualSettings)},
    **END_TO_END,
    run=_image_change_run("counterfactual", CounterfactualSettings, seeded=True),
    headline=_headline("counterfactual_row"),
    check=lambda params, settings: _check_options(params, CounterfactualSettings, settings, "counterfactuals"),
)

WORD_SWAP = Method(
    doc="word-swap counterfactuals of real images (featscope.investigate.word_swap): one image and class per job",
    fields={**IMAGE_CHANGE, **knob_fields(WordSwapSettings)},
    settings=_word_swap_config,
    config=lambda params: _word_swap_config()(),
    run=_image_change_run("word_swap", WordSwapSettings, seeded=False),
    headline=_headline("word_swap_row"),
    check=lambda params, settings: _check_options(params, WordSwapSettings),
    items=True,
)

METHODS: dict[str, Method] = {
    "decode": DECODE,
    "difference": DIFFERENCE,
    "neuron": NEURON,
    "counterfactual": COUNTERFACTUAL,
    "word-swap": WORD_SWAP,
}
