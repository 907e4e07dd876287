"""The investigations of DiG-IN (classifier differences, neurons, counterfactuals) and null-text inversion, run.

Each function builds its items and a work function that calls the method's core
(:mod:`featscope.investigate.cores`) on one item and writes the item's folder; the orchestration
(:mod:`featscope.orchestration`) writes the folders atomically, skips items whose ``metrics.json``
exists (resume), shards items over torchrun ranks (item i on rank i % world size) and ends with
``out/summary.json`` and ``out/summary.md`` (rank 0).

An item folder: ``target.png`` (the real image, where there is one), ``initial.png`` (iteration 0),
``best.png`` (the best iterate), ``final.png`` (the last iterate), ``strip.png``, ``loss.png``, ``metrics.json``,
``config.yaml``, ``log.jsonl``, ``sheet.png``; an inversion's: ``target.png``, ``reconstruction.png``,
``sheet.png``, ``x_T.pt``, ``null_texts.pt``, ``prompt.txt``.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from featscope.captioning import Captioner, load_captioner
from featscope.datasets import ClassFolderDataset, ImageItem, image_items, safe_id
from featscope.errors import FeatscopeError, InputFileError, suggest
from featscope.extractors.base import Extractor
from featscope.images import load_image, save_image
from featscope.investigate import cores
from featscope.investigate.common import (
    DEFAULT_BACKBONE,
    FLIP,
    fit_image,
    load_start_image,
    save_loss_plot,
    save_strip,
)
from featscope.investigate.cores import PUBLISHED_REGULARIZERS, PUBLISHED_WEIGHTS, _label_name, regularized
from featscope.investigate.fidelity import (
    checks,
    intended_attribute,
    is_world,
    reconstruction,
    reconstruction_threshold,
    say_poor,
    summarise,
)
from featscope.investigate.masks import NO_MASK, foreground_mask, load_sam, parse_mask, word_tokens
from featscope.objectives import activation, class_index, class_loss, classifier_difference, last_linear, pick_channel
from featscope.orchestration import Item, Plan, run_plan, summary_row, unique_ids
from featscope.ranks import Ranks
from featscope.runs import RunFolder, atomic_torch_save
from featscope.sheet import save_sheet
from featscope.world.sample import RECORDS

if TYPE_CHECKING:  # the solver and backbones import diffusers (seconds): only when a run starts
    from featscope.backbones.base import Backbone
    from featscope.solvers.configs import EndToEndConfig


# -- loading ---------------------------------------------------------------------------------------
def _backbone(backbone: str | Backbone, device: torch.device) -> Backbone:
    from featscope.backbones import load_backbone

    model = load_backbone(backbone, device=device) if isinstance(backbone, str) else backbone
    return model.to(device)


def _network(net: str | Extractor, device: torch.device, weights: str | None = None) -> Extractor:
    from featscope.extractors import load_extractor

    model = load_extractor(net, weights=weights, device=device) if isinstance(net, str) else net
    return model.to(device).eval()


def _config(
    config: EndToEndConfig | None, settings: dict, backbone: str | Backbone, method: str | None = None
) -> EndToEndConfig:
    """``config``, else the backbone family's defaults for ``method`` (:func:`~featscope.solvers.configs.
    endtoend_defaults`), with the user's ``settings`` on top."""
    from featscope.settings import resolve
    from featscope.solvers.configs import EndToEndConfig, endtoend_defaults

    spec = backbone if isinstance(backbone, str) else backbone.spec
    return resolve(EndToEndConfig, config if config is not None else endtoend_defaults(spec, method), settings)


def _template(prompt_template: str | None, backbone: Backbone) -> str:
    """``{label}`` for the world (its captions are attribute words), DiG-IN's ``a photograph of a {label}`` else."""
    if prompt_template is None:
        return "{label}" if backbone.spec.startswith("world:") else "a photograph of a {label}"
    if "{label}" not in prompt_template:
        raise FeatscopeError(f"prompt template {prompt_template!r} has no {{label}}; e.g. 'a photo of a {{label}}'")
    return prompt_template


def default_mask(mask: str | Path | None, backbone: str | Backbone) -> str | Path | None:
    """The counterfactual's foreground mask: ``mask``; ``"none"`` for no mask; None for the backbone family's
    default (the world: ``cross-attention:otsu``, chosen on the tuning split; the built-in families: none)."""
    from featscope.registry import backbone_settings

    if mask is None:
        mask = backbone_settings(backbone if isinstance(backbone, str) else backbone.spec, "counterfactual").get("mask")
    return None if mask is None or str(mask) == NO_MASK else mask


def parse_label(text: int | str) -> int | str:
    """A class given on the command line: digits are an index, anything else a name."""
    return int(text) if isinstance(text, str) and text.strip().isdigit() else text


# -- an item's files -------------------------------------------------------------------------------
def _save_iterates(run: RunFolder, result: cores.Optimized, captions: list[list[str]], title: str) -> int:
    """initial.png, best.png, final.png, strip.png, loss.png, sheet.png (with the target.png already written, if
    any) and one log.jsonl line per iteration (its loss terms) of sample 0; returns its best iteration."""
    best = result.best_iteration(0)
    images = result.images[:, 0]
    curves = result.loss_curves(0)
    for i in range(len(images)):
        run.log({"iteration": i, "losses": {name: values[i] for name, values in curves.items()}})
    save_image(images[0], run.file("initial.png"))
    save_image(result.best[0], run.file("best.png"))
    save_image(images[-1], run.file("final.png"))
    save_strip(images, captions, run.file("strip.png"), best=best)
    save_loss_plot(curves, run.file("loss.png"), title)
    columns, row = ["initial", "best", "final"], [images[0], result.best[0], images[-1]]
    if run.file("target.png").is_file():
        columns, row = ["target", *columns], [load_image(run.file("target.png"))[0], *row]
    note = f"best: iteration {best}, " + ", ".join(captions[best]) if best < len(captions) else ""
    save_sheet(run.file("sheet.png"), columns, [row], notes=[note])
    return best


def _loss_record(result: cores.Optimized) -> dict:
    return {
        "losses": result.loss_curves(0),
        "augmented_losses": result.augmented_losses(0),
        "stopped_early": bool(result.solver.stopped_early),
    }


def _settings_record(config: EndToEndConfig, backbone: Backbone, device: torch.device) -> dict:
    return {"backbone": backbone.spec, "device": str(device), "solver": asdict(config)}


# -- classifier differences ------------------------------------------------------------------------
def difference(
    net1: str | Extractor,
    net2: str | Extractor,
    classes: Sequence[int | str] | None = None,
    *,
    out: str | Path,
    backbone: str | Backbone = DEFAULT_BACKBONE,
    prompt_template: str | None = None,
    samples_per_class: int = 1,
    loss: str = "conf",
    seed: int = 0,
    device: str = "auto",
    quiet: bool = False,
    config: EndToEndConfig | None = None,
    ranks: Ranks | None = None,
    **settings,
) -> dict | None:
    """Images that ``net1`` recognises as each class and ``net2`` does not (DiG-IN §3, loss ``conf`` as published).

    Item ``<index>_<class>_s<k>`` is sample k of a class: prompt ``prompt_template`` with the class name,
    x_T from seed ``seed + 1000 * index + k``. ``config`` (None: the backbone's defaults) and ``settings`` set the
    :class:`EndToEndConfig`; ``ranks`` None shares the items among torchrun's ranks. Returns the summary (rank 0).
    """
    if samples_per_class < 1:
        raise FeatscopeError("samples_per_class must be at least 1")
    solver = _config(config, settings, backbone)

    def build(torch_device: torch.device) -> Plan:
        first, second = _network(net1, torch_device), _network(net2, torch_device)
        model = _backbone(backbone, torch_device)
        template = _template(prompt_template, model)
        labels = list(classes) if classes else list(range(len(getattr(first, "labels", None) or [])))
        if not labels:
            raise FeatscopeError(f"{first.name} has no class names; name the classes to compare")
        items = []
        for label in labels:
            y1, y2 = class_index(first, label), class_index(second, label)
            name = _label_name(first, label)
            classifier_difference(first, second, label, loss)  # checks the loss kind before any work
            for k in range(samples_per_class):
                payload = {"label": label, "name": name, "y1": y1, "y2": y2, "sample": k, "seed": seed + 1000 * y1 + k}
                items.append(Item(safe_id(f"{y1:03d}_{name}_s{k}"), payload))

        def work(run: RunFolder, item: Item) -> dict:
            p = item.payload
            prompt = template.format(label=p["name"])
            result = cores.difference(model, first, second, p["label"], seeds=[p["seed"]], prompt=prompt, loss=loss,
                                      config=solver, quiet=quiet)  # fmt: skip
            c1, c2 = result.confidence1[0], result.confidence2[0]
            captions = [
                [f"net1 {p['name']}: {a:.3f}", f"net2 {p['name']}: {b:.3f}", f"loss {float(v):.4g}"]
                for a, b, v in zip(c1, c2, result.solver.losses[:, 0], strict=True)
            ]
            best = _save_iterates(run, result, captions, result.objective)
            return {
                "class": p["name"],
                "class_index": {"net1": p["y1"], "net2": p["y2"]},
                "prompt": prompt,
                "seed": p["seed"],
                "best_iteration": best,
                "confidence": {
                    "net1": {"network": first.name, "before": c1[0], "after": c1[best], "per_iteration": c1},
                    "net2": {"network": second.name, "before": c2[0], "after": c2[best], "per_iteration": c2},
                },
                **_loss_record(result),
            }

        record = {"net1": first.name, "net2": second.name, "loss": loss, "prompt_template": template,
                  "samples_per_class": samples_per_class, "seed": seed,
                  **_settings_record(solver, model, torch_device)}  # fmt: skip
        return Plan("difference", items, work, record, difference_row)

    return run_plan(build, out=out, device=device, quiet=quiet, ranks=ranks)


difference_row = summary_row(
    "class = class; net1 before = confidence.net1.before; net1 after = confidence.net1.after; "
    "net2 before = confidence.net2.before; net2 after = confidence.net2.after; best iteration = best_iteration"
)




# -- neurons ---------------------------------------------------------------------------------------
def _check_channels(net: Extractor, layer: str | None, channels: Sequence[int], size) -> str:
    module = net.network
    name = last_linear(module) if layer is None else layer
    known = [n for n, _ in module.named_modules() if n]
    if name not in known:
        hint = f" (see: featscope layers {net.name})"
        raise FeatscopeError(f"{net.name} has no layer {name!r}{suggest(name, known)}{hint}")
    device = next(net.parameters()).device
    with torch.no_grad():
        act = activation(module, net.preprocess(torch.zeros(1, 3, *size, device=device)), name, layer is None)
    count = act.shape[1] if act.dim() in (2, 4) else act.shape[-1]
    bad = [c for c in channels if not 0 <= c < count]
    if bad:
        raise FeatscopeError(f"channel {bad[0]} is out of range: {name!r} of {net.name} has {count} channels")
    return name


@torch.no_grad()
def _dataset_activations(net, layer, inputs, channels, dataset: ClassFolderDataset, size, batch=32) -> torch.Tensor:
    device = next(net.parameters()).device
    module, values = net.network, []
    for start in range(0, len(dataset), batch):
        images = torch.cat([load_start_image(it.path, size) for it in dataset.items[start : start + batch]])
        act = activation(module, net.preprocess(images.to(device)), layer, inputs).float()
        values.append(torch.stack([pick_channel(act, c) for c in channels], 1).cpu())
    return torch.cat(values)


def neuron(
    net: str | Extractor,
    layer: str | None = None,
    channels: Sequence[int] = (0,),
    *,
    out: str | Path,
    backbone: str | Backbone = DEFAULT_BACKBONE,
    prompt: str = "",
    samples: int = 1,
    maximise: bool = True,
    images_folder: str | Path | None = None,
    top_k: int = 8,
    namer: str | None = None,
    seed: int = 0,
    device: str = "auto",
    quiet: bool = False,
    config: EndToEndConfig | None = None,
    ranks: Ranks | None = None,
    **settings,
) -> dict | None:
    """Images that raise (or lower) one channel of ``layer`` (None = the input of the last linear layer,
    DiG-IN's neurons), from plain samples of ``prompt``. Item ``neuron<c>_s<k>``, seed ``seed + k``.

    With ``images_folder`` (a dataset folder), each item folder also gets ``top_k.png`` / ``top_k.json``: the
    dataset images with the highest activations of that channel, and ``metrics.json`` a ``name``: the most
    frequent class of those images, or with ``namer="vlm:FOLDER"`` (an image-to-text model such as BLIP, saved
    with ``save_pretrained``) the most frequent content word of their captions (kept in ``top_k.json``).
    """
    if samples < 1 or top_k < 1:
        raise FeatscopeError("samples and top_k must be at least 1")
    if namer is not None and (not namer.startswith("vlm:") or images_folder is None):
        raise FeatscopeError(f"namer {namer!r}: use vlm:FOLDER (an image-to-text model) with an images folder")
    channels = [int(c) for c in channels]
    dataset = ClassFolderDataset(images_folder) if images_folder is not None else None

    def build(torch_device: torch.device) -> Plan:
        network = _network(net, torch_device)
        size = tuple(network.input_size or (224, 224))
        name = _check_channels(network, layer, channels, size)  # before importing the solver: a quick error
        solver = _config(config, settings, backbone, "neuron")
        model = _backbone(backbone, torch_device)
        captioner = load_captioner(namer[4:], torch_device) if namer is not None else None
        items = [
            Item(safe_id(f"neuron{c}_s{k}"), {"channel": c, "sample": k, "seed": seed + k})
            for c in channels
            for k in range(samples)
        ]
        cache: dict[str, torch.Tensor] = {}

        def work(run: RunFolder, item: Item) -> dict:
            c = item.payload["channel"]
            result = cores.neuron(model, network, c, layer=layer, maximise=maximise, seeds=[item.payload["seed"]],
                                  prompt=prompt, config=solver, quiet=quiet)  # fmt: skip
            acts, tops = result.activation[0], result.top_class[0] if result.top_class else None
            captions = [
                [f"activation {a:.3g}"] + ([f"{tops[i][0]}: {tops[i][1]:.2f}"] if tops else [])
                for i, a in enumerate(acts)
            ]
            best = _save_iterates(run, result, captions, result.objective)
            metrics = {
                "layer": name,
                "channel": c,
                "maximise": maximise,
                "prompt": prompt,
                "seed": item.payload["seed"],
                "best_iteration": best,
                "activation": {"before": acts[0], "after": acts[best], "per_iteration": acts},
                **_loss_record(result),
            }
            if tops:
                metrics["top_class"] = {"before": list(tops[0]), "after": list(tops[best])}
            if dataset is not None:
                if "acts" not in cache:
                    cache["acts"] = _dataset_activations(network, name, layer is None, channels, dataset, size)
                column = cache["acts"][:, channels.index(c)]
                metrics.update(_top_k(run, dataset, column, top_k, size, captioner, namer))
            return metrics

        record = {"net": network.name, "layer": name, "channels": channels, "maximise": maximise, "prompt": prompt,
                  "samples": samples, "seed": seed,
                  "images_folder": str(images_folder) if images_folder is not None else None, "top_k": top_k,
                  "namer": namer, **_settings_record(solver, model, torch_device)}  # fmt: skip
        return Plan("neuron", items, work, record, neuron_row)

    return run_plan(build, out=out, device=device, quiet=quiet, ranks=ranks)


def _top_k(run: RunFolder, dataset: ClassFolderDataset, column: torch.Tensor, top_k: int, size, captioner,
           namer: str | None) -> dict:  # fmt: skip
    """top_k.png and top_k.json: the dataset images with the highest activations; their name and top value."""
    order = column.argsort(descending=True)[:top_k].tolist()
    top_images = torch.cat([load_start_image(dataset[i].path, size) for i in order])
    save_strip(top_images, [[f"{float(column[i]):.3g}"] for i in order], run.file("top_k.png"))
    tops = [{"file": str(dataset[i].path), "class": dataset[i].class_name, "activation": float(column[i])}
            for i in order]  # fmt: skip
    if captioner is not None:
        for top, caption in zip(tops, captioner.caption([dataset[i].path for i in order]), strict=True):
            top["caption"] = caption
        name = _neuron_name([_content_words(t["caption"]) for t in tops], namer)
    else:
        name = _neuron_name([[t["class"]] for t in tops], "classes")
    run.write_json("top_k.json", tops)
    return {"name": name, "dataset_top_activation": float(column[order[0]])}


STOPWORDS = frozenset("a an and are at by for from image in is it its of on or photo photograph picture some that "
                      "the there this to with".split())  # fmt: skip


def _content_words(caption: str) -> list[str]:
    return sorted(set(re.findall(r"[a-z]+", caption.lower())) - STOPWORDS)


def _neuron_name(names: list[list[str]], by: str) -> dict:
    """The most frequent name over the top images (each image counts a name once), with the five commonest."""
    counts = Counter(n for per_image in names for n in set(per_image)).most_common(5)
    return {"by": by, "name": counts[0][0] if counts else None, "counts": dict(counts)}


neuron_row = summary_row(
    "channel = channel; activation before = activation.before; activation after = activation.after; "
    "best iteration = best_iteration"
)




# -- real images: files or a dataset ---------------------------------------------------------------
def image_list(
    images,
    *,
    class_names: str | Path | None = None,
    classes: Sequence[str] | None = None,
    images_per_class: int | None = None,
) -> list[ImageItem]:
    """Image files, or one dataset folder (class per sub-folder), or a :class:`ClassFolderDataset`, as items."""
    if isinstance(images, ClassFolderDataset):
        return list(images)
    files = [images] if isinstance(images, (str, Path)) else list(images)
    single = Path(files[0]) if len(files) == 1 else None
    if single is not None and (single.is_dir() or not single.suffix):  # a folder (or a missing one)
        return list(
            ClassFolderDataset(
                files[0], class_names=class_names, classes=list(classes or []), images_per_class=images_per_class
            )
        )
    if not files:
        raise FeatscopeError("no images given; pass image files or a dataset folder")
    return image_items(files)


def _caption(item: ImageItem, prompt: str | None, template: str, label: str, captioner: Captioner | None = None) -> str:
    """The prompt of a real image: ``prompt`` (``{label}`` filled in), else its known caption
    (:func:`known_caption`, like DiG-IN's Open-Flamingo captions), else the ``captioner``'s caption of the
    image, else the template with the class name."""
    if prompt is not None:
        return prompt.replace("{label}", label)
    known = known_caption(item.path)
    if known is not None:
        return known
    if captioner is not None:
        return captioner.caption([item.path])[0]
    return template.format(label=label)


def known_caption(path: Path) -> str | None:
    """An image's caption written beside it: ``<image>.txt``, else its line in the ``records.jsonl`` of its folder
    (as ``featscope world sample`` writes them); None when there is neither."""
    sidecar = path.with_suffix(".txt")
    if sidecar.is_file():
        return sidecar.read_text(encoding="utf-8").strip()
    records = path.parent / RECORDS
    if not records.is_file():
        return None
    return _record_captions(str(records), records.stat().st_mtime_ns).get(path.name)


@functools.lru_cache(maxsize=8)
def _record_captions(path: str, mtime: int) -> dict[str, str]:
    """file name -> caption of a records.jsonl (``mtime`` keys the cache); lines without both are skipped."""
    captions = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("file"), str) and isinstance(record.get("caption"), str):
            captions[record["file"]] = record["caption"]
    return captions


# -- masks -----------------------------------------------------------------------------------------
def load_mask(path: str | Path, image_size: tuple[int, int] | None, size: tuple[int, int]) -> torch.Tensor:
    """A user mask PNG (white = foreground) as (1, 1, *size) in [0, 1]; it must have the size of the image
    (``image_size``, before fitting) or of the backbone (``size``)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"mask file {str(path)!r} does not exist; check the path")
    try:
        with Image.open(path) as image:
            gray = image.convert("L")
    except (UnidentifiedImageError, OSError) as error:
        raise InputFileError(f"cannot read mask {str(path)!r} ({error}); give a PNG") from None
    h, w = gray.height, gray.width
    allowed = {tuple(size)} | ({tuple(image_size)} if image_size is not None else set())
    if (h, w) not in allowed:
        sizes = " or ".join(f"{a}x{b}" for a, b in sorted(allowed))
        raise InputFileError(f"mask {str(path)!r} is {h}x{w} pixels (HxW); it must be {sizes}, the image's size")
    import numpy as np

    mask = torch.from_numpy(np.asarray(gray, dtype=np.float32) / 255)[None, None]
    return fit_image(mask, size, mode="area") if (h, w) != tuple(size) else mask


def _gaussian(kernel: int, sigma: float) -> torch.Tensor:
    x = torch.arange(kernel, dtype=torch.float32) - (kernel - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def postprocess_mask(mask: torch.Tensor, steps: Sequence[str]) -> torch.Tensor:
    """DiG-IN's mask post-processing: ``erosion_K``, ``dilation_K`` (K x K square), ``blur_K_SIGMA`` (Gaussian)."""
    m = mask.float()
    for step in steps:
        kind, *args = step.split("_")
        try:
            numbers = [float(a) for a in args]
        except ValueError:
            numbers = []
        if kind in ("erosion", "dilation") and len(numbers) == 1 and numbers[0] >= 1:
            k = int(numbers[0])
            padded = F.pad(m if kind == "dilation" else -m, ((k - 1) // 2, k // 2, (k - 1) // 2, k // 2), "replicate")
            pooled = F.max_pool2d(padded, k, stride=1)
            m = pooled if kind == "dilation" else -pooled
        elif kind == "blur" and len(numbers) == 2 and numbers[0] >= 1 and numbers[1] > 0:
            k = int(numbers[0]) | 1
            g = _gaussian(k, numbers[1])
            pad = k // 2
            m = F.conv2d(F.pad(m, (pad, pad, 0, 0), "replicate"), g.view(1, 1, 1, k))
            m = F.conv2d(F.pad(m, (0, 0, pad, pad), "replicate"), g.view(1, 1, k, 1))
        else:
            raise FeatscopeError(
                f"unknown mask post-processing step {step!r}; use erosion_K, dilation_K or blur_K_SIGMA (blur_45_30)"
            )
    return m.clamp(0, 1)


# -- counterfactuals -------------------------------------------------------------------------------
def counterfactual(
    net: str | Extractor,
    images,
    start_label: int | str | None = None,
    target_label: int | str | Sequence[int | str] = (),
    *,
    out: str | Path,
    backbone: str | Backbone = DEFAULT_BACKBONE,
    prompt: str | None = None,
    prompt_template: str | None = None,
    caption_model: str | None = None,
    regularizers: Sequence[str] = PUBLISHED_REGULARIZERS,
    regularizer_weights: Sequence[float] = PUBLISHED_WEIGHTS,
    mask: str | Path | None = None,
    mask_postprocess: Sequence[str] = (),
    loss: str = "ce",
    inner_steps: int = 10,
    class_names: str | Path | None = None,
    classes: Sequence[str] | None = None,
    images_per_class: int | None = None,
    seed: int = 0,
    device: str = "auto",
    quiet: bool = False,
    config: EndToEndConfig | None = None,
    ranks: Ranks | None = None,
    **settings,
) -> dict | None:
    """Visual counterfactuals of real images (DiG-IN §5): null-text inversion of each image with its caption,
    then end-to-end optimisation of ``class_loss(target) + sum(weight * regularizer)`` from the inverted x_T
    and null texts. Item ``<image id>_to_<target>``, one per image and target class, seed ``seed + i``.

    ``images``: image files, a dataset folder (``class_names``/``classes``/``images_per_class`` select from
    it; the start label defaults to the image's class name) or a :class:`ClassFolderDataset`. The caption is
    ``prompt``, else ``IMAGE.txt``, else the ``caption_model``'s (:func:`featscope.captioning.load_captioner`),
    else ``prompt_template`` with the start class. ``mask``, the
    foreground of the background regularisers: a PNG (white = foreground; the image's or the backbone's size),
    or ``"cross-attention"`` (``:THRESHOLD`` / ``:otsu``; the start class word's cross-attention in the
    caption while the inverted image is regenerated) or ``"sam:FOLDER"`` (SAM / SAM-HQ prompted from that map),
    see :mod:`featscope.investigate.masks`; post-processed by ``mask_postprocess`` (``erosion_3``,
    ``dilation_20``, ``blur_45_30``). ``"none"``: the whole image counts as background. None: the backbone
    family's default (:func:`default_mask`); config.yaml records the mask used.
    """
    solver = _config(config, settings, backbone)
    mask = default_mask(mask, backbone)
    if solver.guidance_scale == 1.0:
        raise FeatscopeError("counterfactuals start from a null-text inversion, which needs guidance_scale > 1")
    targets = [target_label] if isinstance(target_label, (int, str)) else list(target_label)
    if not targets:
        raise FeatscopeError("no target class given; name the class the image should become")
    entries = image_list(images, class_names=class_names, classes=classes, images_per_class=images_per_class)
    spec = parse_mask(mask)

    def build(torch_device: torch.device) -> Plan:
        network = _network(net, torch_device)
        model = _backbone(backbone, torch_device)
        size = tuple(model.image_size)
        template = _template(prompt_template, model)
        sam = load_sam(spec.source, torch_device) if spec is not None and spec.kind == "sam" else None
        user_mask = _user_mask(mask, entries, size, mask_postprocess) if mask is not None and spec is None else None
        captioner = load_captioner(caption_model, torch_device) if caption_model is not None else None
        items = _counterfactual_items(network, model, entries, start_label, targets, prompt, template, spec is not None,
                                      captioner)  # fmt: skip
        for target in targets:
            regularized(class_loss(network, target, loss), regularizers, regularizer_weights)  # checks early
        seeds = {item.item_id: seed + i for i, item in enumerate(items)}

        def work(run: RunFolder, item: Item) -> dict:
            p = item.payload
            entry: ImageItem = p["entry"]
            start_name, target_name = _label_name(network, p["start"]), _label_name(network, p["target"])
            prompt_text = _caption(entry, prompt, template, start_name, captioner)
            image = load_start_image(entry.path, size)
            save_image(image[0], run.file("target.png"))
            inverted = cores.null_inversion(model, image, prompt_text, num_steps=solver.num_steps,
                                            guidance_scale=solver.guidance_scale, inner_steps=inner_steps,
                                            quiet=quiet)  # fmt: skip
            m = user_mask
            if spec is not None:
                soft, found = foreground_mask(
                    spec, model, image, inverted[0], prompt_text, start_name, null_texts=inverted[1],
                    guidance_scale=solver.guidance_scale, sam=sam,
                )  # fmt: skip
                save_image(soft[0].expand(3, -1, -1), run.file("attention.png"))
                m = postprocess_mask(found, mask_postprocess)
            if mask is not None:
                save_image(m[0].expand(3, -1, -1), run.file("mask.png"))
            result = cores.counterfactual(
                model, network, image, p["start"], p["target"], seeds=[seeds[item.item_id]], prompts=prompt_text,
                regularizers=regularizers, regularizer_weights=regularizer_weights, mask=m, loss=loss,
                inverted=inverted, config=solver, quiet=quiet,
            )  # fmt: skip
            metrics = _counterfactual_files(run, result, entry, start_name, target_name, prompt_text, mask)
            flipped = metrics["confidence"]["target_class"]["after"] > FLIP
            return {**metrics, **checks(image, result.images[0], result.best, model.spec, flipped=flipped,
                                        intended=intended_attribute(target_name), target=target_name,
                                        item_id=item.item_id, say=True)}  # fmt: skip

        record = {"net": network.name, "start_label": start_label, "target_labels": targets, "prompt": prompt,
                  "prompt_template": template, "caption_model": caption_model, "regularizers": list(regularizers),
                  "regularizer_weights": [float(w) for w in regularizer_weights],
                  "mask": str(mask) if mask is not None else None, "mask_postprocess": list(mask_postprocess),
                  "loss": loss, "inner_steps": inner_steps, "seed": seed,
                  **_settings_record(solver, model, torch_device)}  # fmt: skip
        return Plan("counterfactual", items, work, record, counterfactual_row, summarise)

    return run_plan(build, out=out, device=device, quiet=quiet, ranks=ranks)


def _counterfactual_items(network: Extractor, model: Backbone, entries: list[ImageItem], start_label, targets: list,
                          prompt: str | None, template: str, word_in_caption: bool,
                          captioner: Captioner | None = None) -> list[Item]:  # fmt: skip
    """One item per image and target class; fails on a missing or unknown class before any work."""
    items = []
    for entry, item_id in zip(entries, unique_ids([e.item_id for e in entries]), strict=True):
        start = start_label if start_label is not None else (entry.class_name or None)
        if start is None:
            raise FeatscopeError(f"no start class for {str(entry.path)!r}; give the start label")
        class_index(network, start)  # an unknown class fails here
        if word_in_caption:  # a generated mask needs the class word in the caption
            start_name = _label_name(network, start)
            word_tokens(model, _caption(entry, prompt, template, start_name, captioner), start_name)
        for target in targets:
            class_index(network, target)
            payload = {"entry": entry, "start": start, "target": target}
            items.append(Item(safe_id(f"{item_id}_to_{_label_name(network, target)}"), payload))
    return items


def _user_mask(mask: str | Path, entries: list[ImageItem], size: tuple[int, int], steps: Sequence[str]) -> torch.Tensor:
    """The user's mask PNG at the backbone's size, post-processed (it may have the images' size when all share it)."""
    from PIL import Image

    shapes = set()
    for entry in entries:
        with Image.open(entry.path) as im:
            shapes.add((im.height, im.width))
    image_size = shapes.pop() if len(shapes) == 1 else None
    return postprocess_mask(load_mask(mask, image_size, size), steps)


def _counterfactual_files(run: RunFolder, result: cores.CounterfactualResult, entry: ImageItem, start_name: str,
                          target_name: str, prompt_text: str, mask: str | Path | None) -> dict:  # fmt: skip
    """The iterates and figures of a counterfactual item; returns its metrics."""
    cs, ct, d = result.start_confidence[0], result.target_confidence[0], result.distance[0]
    captions = [
        [f"{start_name}: {a:.3f}", f"{target_name}: {b:.3f}", f"loss {float(v):.4g}"]
        for a, b, v in zip(cs[1:], ct[1:], result.solver.losses[:, 0], strict=True)
    ]
    best = _save_iterates(run, result, captions, result.objective)
    return {
        "image": str(entry.path),
        "start_class": start_name,
        "target_class": target_name,
        "prompt": prompt_text,
        "mask": str(mask) if mask is not None else None,
        "best_iteration": best,
        "confidence": {
            "start_class": {"image": cs[0], "before": cs[1], "after": cs[1 + best], "per_iteration": cs[1:]},
            "target_class": {"image": ct[0], "before": ct[1], "after": ct[1 + best], "per_iteration": ct[1:]},
        },
        "distance_to_image": {
            "l1_before": d["l1"][0],
            "l2_before": d["l2"][0],
            "l1_after": d["l1"][best],
            "l2_after": d["l2"][best],
            "per_iteration": d,
        },
        **_loss_record(result),
    }


counterfactual_row = summary_row(
    "target = target_class; start conf before = confidence.start_class.before; "
    "start conf after = confidence.start_class.after; target conf before = confidence.target_class.before; "
    "target conf after = confidence.target_class.after; L2 after = distance_to_image.l2_after; "
    "best iteration = best_iteration; reconstruction L2 = reconstruction.l2; verdict = verdict"
)




# -- null-text inversion ---------------------------------------------------------------------------
def invert(
    images,
    *,
    out: str | Path,
    backbone: str | Backbone = DEFAULT_BACKBONE,
    prompt: str | None = None,
    prompt_template: str | None = None,
    caption_model: str | None = None,
    num_steps: int = 20,
    guidance_scale: float = 3.0,
    inner_steps: int = 10,
    class_names: str | Path | None = None,
    classes: Sequence[str] | None = None,
    images_per_class: int | None = None,
    device: str = "auto",
    quiet: bool = False,
    ranks: Ranks | None = None,
) -> dict | None:
    """Null-text inversion of real images (DiG-IN §4): per item ``x_T.pt``, ``null_texts.pt`` (num_steps, 1, L, D),
    ``target.png``, ``reconstruction.png``, ``prompt.txt`` and the reconstruction error (also of plain DDIM
    inversion) in ``metrics.json``. The prompt is ``prompt``, else a ``<image>.txt`` caption, else the
    ``caption_model``'s caption, else the template with the class name (dataset folders; loose files without a
    prompt get the empty caption)."""
    if num_steps < 1 or inner_steps < 0:
        raise FeatscopeError("num_steps must be at least 1 and inner_steps at least 0")
    if guidance_scale <= 1.0:
        raise FeatscopeError("null-text inversion fits the unconditional embedding of CFG: use guidance_scale > 1")
    entries = image_list(images, class_names=class_names, classes=classes, images_per_class=images_per_class)

    def build(torch_device: torch.device) -> Plan:
        model = _backbone(backbone, torch_device)
        if not model.has_prompts:
            raise FeatscopeError(f"null-text inversion needs a backbone with prompts; {model.spec} has none")
        size = tuple(model.image_size)
        template = _template(prompt_template, model)
        captioner = load_captioner(caption_model, torch_device) if caption_model is not None else None
        ids = unique_ids([e.item_id for e in entries])
        items = [Item(i, e) for i, e in zip(ids, entries, strict=True)]

        def work(run: RunFolder, item: Item) -> dict:
            entry: ImageItem = item.payload
            text = _caption(entry, prompt, template if entry.class_name else "{label}", entry.class_name, captioner)
            image = load_start_image(entry.path, size)
            save_image(image[0], run.file("target.png"))
            result = cores.invert(model, image, text, num_steps=num_steps, guidance_scale=guidance_scale,
                                  inner_steps=inner_steps, quiet=quiet)  # fmt: skip
            atomic_torch_save(result.x_t.cpu(), run.file("x_T.pt"))
            atomic_torch_save(result.null_texts.cpu(), run.file("null_texts.pt"))
            (run.file("prompt.txt")).write_text(text + "\n", encoding="utf-8")
            save_image(result.reconstruction[0], run.file("reconstruction.png"))
            errors = f"L2 {result.distance[0]['l2']:.4f} (plain DDIM inversion: {result.ddim_distance[0]['l2']:.4f})"
            save_sheet(
                run.file("sheet.png"),
                ["target", "null-text inversion", "DDIM inversion"],
                [[image[0], result.reconstruction[0], result.ddim_reconstruction[0]]],
                notes=[errors],
            )
            recon = reconstruction(image, result.reconstruction, reconstruction_threshold(model.spec),
                                   is_world(model.spec))  # fmt: skip
            say_poor(item.item_id, recon)
            return {
                "image": str(entry.path),
                "class": entry.class_name or None,
                "prompt": text,
                "num_steps": num_steps,
                "guidance_scale": guidance_scale,
                "latent_mse": result.latent_mse[0],
                **result.distance[0],
                "ddim_only": {"latent_mse": result.ddim_latent_mse[0], **result.ddim_distance[0]},
                "reconstruction": recon,
            }

        record = {"prompt": prompt, "prompt_template": template, "caption_model": caption_model, "num_steps": num_steps,
                  "guidance_scale": guidance_scale, "inner_steps": inner_steps, "backbone": model.spec,
                  "device": str(torch_device)}  # fmt: skip
        return Plan("invert", items, work, record, invert_row)

    return run_plan(build, out=out, device=device, quiet=quiet, ranks=ranks)


invert_row = summary_row("latent MSE = latent_mse; L2 = l2; L2 plain DDIM = ddim_only.l2")


