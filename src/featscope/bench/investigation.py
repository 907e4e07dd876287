"""Measure the investigation methods on the world, where every attribute of every image is known.

Three measurements, one per use case of the end-to-end solver (issue #5's acceptance):

- ``counterfactual``: world images of one shape are null-text inverted with their captions and pushed to
  another shape of ``world:shape-net``, with and without the background regularisers; the rate at which the
  target class passes 0.5, and the change of the true background pixels (the renderer knows them).
- ``difference``: for every shape, images that ``world:shape-net`` calls that shape and ``world:spurious-net``
  does not; the oracle then reads their colour, to see whether the disagreement comes from the colour
  shortcut spurious-net was trained with. Two baselines: the same selection on ``n`` unguided samples per
  shape, and on as many unguided samples as the guided method's network evaluations.
- ``neuron``: images that raise a channel of the penultimate layer: the activation over the plain sample's
  and over the channel's mean on 512 held-out images.
- ``neuron-images``: the counterfactual's world images with a channel of the penultimate layer raised from their
  inversion, one row per setting of :data:`NEURON_IMAGE_ROWS`: how often the activation rose, by how much, and
  which attributes the oracle reads changed.

The scene kind follows the backbone's image size (:func:`~featscope.bench.run.backbone_kind`); on a 64 px
backbone (``patterns64``) the networks are ``world:shape-net-64`` and ``world:tag-net``, whose planted shortcut
is the corner tag, called star (:data:`INVESTIGATION_KINDS`). Each calls the cores users run
(:mod:`featscope.investigate.cores`), in batches.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from featscope.backbones import load_backbone
from featscope.backbones.base import Backbone
from featscope.bench.run import backbone_kind, check_out, machine
from featscope.bench.stats import format_proportion, proportion
from featscope.bench.targets import DEFAULT_SPLIT, TargetSource
from featscope.devices import peak_memory_mb, resolve_device
from featscope.errors import FeatscopeError
from featscope.extractors import load_extractor
from featscope.extractors.base import Extractor
from featscope.images import save_image, to_tensor
from featscope.investigate import cores, fidelity
from featscope.investigate.common import FLIP
from featscope.investigate.masks import foreground_mask, parse_mask
from featscope.investigate.wordswap import word_swap_core
from featscope.objectives import activation, last_linear
from featscope.progress import tqdm
from featscope.runs import atomic_write_json, atomic_write_text
from featscope.solvers.configs import EndToEndConfig, WordSwapConfig, endtoend_defaults
from featscope.world.classifier_tasks import TAG_CLASS
from featscope.world.kinds import DEFAULT_KIND, scene_kind
from featscope.world.oracle import OracleReading
from featscope.world.patterns import TAG_BOX
from featscope.world.render import COLORS, SHAPES, WorldRecord, object_mask

METHODS = ("counterfactual", "word-swap", "difference", "neuron", "neuron-images")
RESULTS = "results.json"
HELD_OUT_IMAGES = 512  # the split's images over which a neuron's mean activation is taken
# counterfactual rows: (regularizers, weights, foreground mask, start): "object" is the renderer's true object
# mask, a mask spec (``cross-attention:otsu``) is made from each image's inversion as `featscope investigate
# counterfactual --mask SPEC` makes it, None counts the whole image as background; the optimisation starts from
# the reconstruction or from DiG-IN's best word swap (``--start-from word-swap``)
BACKGROUND = (cores.PUBLISHED_REGULARIZERS, cores.PUBLISHED_WEIGHTS)
ROWS = {
    "no regulariser": ((), (), "object", cores.RECONSTRUCTION),
    "background regularisers": (*BACKGROUND, "object", cores.RECONSTRUCTION),
    "background regularisers, no mask": (*BACKGROUND, None, cores.RECONSTRUCTION),
    "background regularisers, cross-attention mask": (*BACKGROUND, "cross-attention:otsu", cores.RECONSTRUCTION),
    "word-swap start, background regularisers, cross-attention mask": (
        *BACKGROUND,
        "cross-attention:otsu",
        cores.WORD_SWAP,
    ),
}
# neuron counterfactuals of images: (regularizers, weights, foreground mask, DiG-IN's re-injection start, cutouts;
# None: the solver's)
NEURON_IMAGE_ROWS = {
    "reconstruction start, background regularisers, no mask": (*BACKGROUND, None, False, None),
    "re-injection start, cross-attention mask, no regularisers or cutouts": ((), (), "cross-attention:otsu", True, 0),
}
SHORTCUT_COLOR = {shape: color for shape, color in zip(SHAPES, COLORS, strict=False)}  # spurious-net's training
UNGUIDED_BATCH = 64  # unguided baseline samples per call of the sampler
EQUAL_SEED_OFFSET, EQUAL_SEED_STRIDE = 10**7, 10**5  # equal-evaluation baseline: seed + offset + stride * class + k
EVALUATION_RULE = (
    "forward passes of each network per class: guided, per sample (iterations + 1) scoring passes and, per "
    "iteration, loss_steps x cutouts augmented passes (their backward passes not counted); unguided, one per sample"
)


@dataclass(frozen=True)
class InvestigationKind:
    """The investigation bench's choices on one world scene kind (``world.kinds``): its networks and how the
    oracle's reading shows the second network's planted shortcut."""

    scene: str  # the scene kind's name
    network: str  # the network under study: counterfactuals, neurons, the difference pair's first
    second: str  # the difference pair's second network, trained with a planted shortcut
    attribute: str  # the oracle's attribute that carries the shortcut
    cue: Mapping[str, str]  # class -> the attribute's value ``second`` was trained to call that class
    shows_text: str  # results.md: what a disagreeing image that shows the shortcut is
    aliases: Mapping[str, str] = field(default_factory=dict)  # result keys also written under an older name

    def value(self, reading: OracleReading) -> str | None:
        """The shortcut attribute as the oracle reads it (None where the reading is not valid)."""
        return getattr(reading, self.attribute) if reading.valid else None

    def shows(self, value: str | None, predicted: str) -> bool:
        """Whether an image whose shortcut attribute reads ``value`` carries the cue of the class ``predicted``."""
        return value is not None and value == self.cue.get(predicted)

    def off(self, value: str | None, label: str) -> bool:
        """Whether a readable image lacks the cue of the class ``label``."""
        return value is not None and value != self.cue.get(label)

    def aliased(self, entry: dict) -> dict:
        """``entry`` with its keys also under their older names (shapes32's colour names)."""
        return {**entry, **{old: entry[new] for new, old in self.aliases.items() if new in entry}}


COLOR_ALIASES = {
    "disagreeing_off_shortcut": "disagreeing_off_shortcut_color",
    "disagreeing_shortcut_of_second_prediction": "disagreeing_color_of_second_prediction",
    "plain_off_shortcut": "plain_off_shortcut_color",
    "shortcut_values": "colors",
}
INVESTIGATION_KINDS: dict[str, InvestigationKind] = {
    "shapes32": InvestigationKind(
        "shapes32", "world:shape-net", "world:spurious-net", "color", SHORTCUT_COLOR,
        "whose colour is the shortcut colour of the shape {second} predicts", COLOR_ALIASES,
    ),
    "patterns64": InvestigationKind(
        "patterns64", "world:shape-net-64", "world:tag-net", "tag", {TAG_CLASS: "tagged"},
        f"that carry the corner tag while {{second}} predicts {TAG_CLASS}",
    ),
}  # fmt: skip


def object_masks(records: Sequence[WorldRecord], size: int) -> torch.Tensor:
    """The renderer's object coverage of each record at ``size`` px: (B, 1, size, size)."""
    return torch.from_numpy(np.stack([object_mask(r, size) for r in records]))[:, None]


def background_masks(masks: torch.Tensor, records: Sequence[WorldRecord]) -> torch.Tensor:
    """Pixels that are neither the object (1 - its coverage ``masks``) nor a tagged record's tag square."""
    background = 1 - masks
    start, stop = TAG_BOX
    for i, record in enumerate(records):
        if getattr(record, "tag", None) == "tagged":
            background[i, :, start:stop, start:stop] = 0
    return background


def background_change(results: torch.Tensor, images: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Per image, the mean absolute change of the ``background`` pixels (B, 1, H, W) from ``images`` to
    ``results`` (B, 3, H, W)."""
    return ((results - images).abs() * background).sum((1, 2, 3)) / (3 * background.sum((1, 2, 3)))


def _config(settings: dict, backbone: str, method: str | None = None) -> EndToEndConfig:
    """The backbone's defaults for ``method`` (what ``featscope investigate`` runs with) with ``settings`` on top."""
    config = endtoend_defaults(backbone, method).with_overrides(**settings)
    config.validate()
    return config


def _batches(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


@torch.no_grad()
def _probs(net, images: torch.Tensor) -> torch.Tensor:
    device = next(net.parameters()).device
    return net.network(net.preprocess(images.to(device))).float().softmax(1).cpu()


def save_grid(images: torch.Tensor, path: Path) -> None:
    """Up to 32 images in rows of 8, one PNG."""
    images = images[:32]
    rows = [torch.cat(list(images[i : i + 8]), dim=2) for i in range(0, len(images), 8)]
    width = max(r.shape[2] for r in rows)
    rows = [torch.nn.functional.pad(r, (0, width - r.shape[2])) for r in rows]
    save_image(torch.cat(rows, dim=1), path)


def _row_mask(mask: str | None, true_masks, backbone, images, inverted, captions, start, config) -> torch.Tensor | None:
    """A row's foreground masks (B, 1, H, W): the true object masks, generated ones (``mask`` a spec), or None."""
    if mask is None:
        return None
    if mask == "object":
        return true_masks
    spec = parse_mask(mask)
    x_t, nulls = inverted
    found = [foreground_mask(spec, backbone, images[i : i + 1], x_t[i : i + 1], captions[i], start,
                             null_texts=nulls[:, i : i + 1], guidance_scale=config.guidance_scale)[1]
             for i in range(len(images))]  # fmt: skip
    return torch.cat(found)


def fidelity_row(backbone, images: torch.Tensor, regenerated: torch.Tensor, results: torch.Tensor,
                 flipped: Sequence[bool], target: str | None) -> dict:  # fmt: skip
    """Minimality and reconstruction fidelity of a row's results, as ``featscope investigate`` records them per item
    (:func:`featscope.investigate.fidelity.checks`), in shares with 95% intervals; per image in ``items``.
    ``target``: the target class (None: a neuron's edit, minimal when at most one attribute changed)."""
    intended = fidelity.intended_attribute(target) if target is not None else None
    items = {
        str(i): fidelity.checks(images[i : i + 1], regenerated[i : i + 1], results[i : i + 1], backbone.spec,
                                intended=intended, target=target, flipped=bool(flipped[i]))
        for i in range(len(images))
    }  # fmt: skip
    row = fidelity.aggregate(items)
    row["reconstruction_l2_mean"] = float(np.mean([m["reconstruction"]["l2"] for m in items.values()]))
    row["items"] = [{"changed": m["minimality"] and m["minimality"]["changed"], "verdict": m["verdict"],
                     "reconstruction_l2": m["reconstruction"]["l2"]} for m in items.values()]  # fmt: skip
    return row


@dataclass
class _Scenes:
    """A bench's world images of one shape: the images (B, 3, H, W), their records, the renderer's object masks,
    the background pixels (neither object nor tag) and the noise seed of the first."""

    images: torch.Tensor
    records: list[WorldRecord]
    masks: torch.Tensor
    background: torch.Tensor
    seed: int


def _scenes(source: TargetSource, n: int, shape: str) -> _Scenes:
    """The first ``n`` images of ``shape`` from ``source``, with their masks."""
    arrays, records = source.images(n, shape=shape)
    masks = object_masks(records, scene_kind(source.kind).image_size)
    return _Scenes(to_tensor(arrays), records, masks, background_masks(masks, records), source.noise_seed)


def _inverted_batches(backbone, scenes: _Scenes, start: str, config, batch: int, cache: dict | None, desc: str,
                      quiet: bool):  # fmt: skip
    """(indices, captions, null-text inversion) per batch of ``scenes``, each inversion made once per ``cache``."""
    cache = {} if cache is None else cache
    for part in tqdm(_batches(len(scenes.images), batch), desc=desc, disable=quiet):
        idx = list(part)
        captions = [scenes.records[i].caption() for i in idx]
        yield idx, captions, _inversion(backbone, scenes.images[idx], captions, config, cache, (start, tuple(idx)))


def _inversion(backbone, images: torch.Tensor, captions: list[str], config, cache: dict, key) -> tuple:
    """The null-text inversion of a batch (as investigate makes it), once per ``key`` in ``cache``."""
    if key not in cache:
        cache[key] = cores.null_inversion(backbone, images, captions, num_steps=config.num_steps,
                                          guidance_scale=config.guidance_scale)  # fmt: skip
    return cache[key]


def counterfactual_bench(
    backbone,
    net,
    *,
    n: int,
    source: TargetSource,
    start: str,
    target: str,
    config: EndToEndConfig,
    batch: int,
    out: Path,
    quiet: bool,
    rows: Sequence[str] = tuple(ROWS),
    inversions: dict | None = None,
) -> dict:
    """Counterfactuals ``start`` -> ``target`` of ``n`` world images, one optimisation per row of :data:`ROWS`
    (without regularisers; with the background regularisers outside the true object; with them and no mask).
    ``inversions`` caches the null-text inversions (shared with :func:`word_swap_bench`). The images are scenes of
    ``source``'s kind, read by its oracle; their background is every pixel neither object nor tag."""
    scenes = _scenes(source, n, start)
    images, masks, background, seed = scenes.images, scenes.masks, scenes.background, scenes.seed
    scene = scene_kind(source.kind)
    y = net.labels.index(target)
    settings = {name: ROWS[name] for name in rows}
    results = {name: [] for name in settings}
    for idx, captions, inverted in _inverted_batches(backbone, scenes, start, config, batch, inversions,
                                                     "counterfactual", quiet):  # fmt: skip
        for name, (regularizers, weights, mask, start_from) in settings.items():
            result = cores.counterfactual(
                backbone, net, images[idx], start, target, seeds=[seed + i for i in idx], prompts=captions,
                regularizers=regularizers, regularizer_weights=weights,
                mask=_row_mask(mask, masks[idx], backbone, images[idx], inverted, captions, start, config),
                inverted=inverted, start_from=start_from, config=config,
            )  # fmt: skip
            results[name].append((result.reconstruction, result.best))
    rows = {}
    for name, parts in results.items():
        plain = torch.cat([p for p, _ in parts])
        best = torch.cat([b for _, b in parts])
        conf = _probs(net, best)[:, y]
        change = background_change(best, images, background)
        plain_change = background_change(plain, images, background)
        readings = scene.read_batch(best)
        rows[name] = {
            "target_confidence_above_0.5": proportion(int((conf > 0.5).sum()), n),
            "target_confidence_mean": float(conf.mean()),
            "start_confidence_of_inversion_mean": float(_probs(net, plain)[:, net.labels.index(start)].mean()),
            "oracle_reads_target_shape": proportion(sum(r.valid and r.shape == target for r in readings), n),
            "background_change_mean_abs": float(change.mean()),
            "background_change_of_inversion_mean_abs": float(plain_change.mean()),
            **fidelity_row(backbone, images, plain, best, (conf > FLIP).tolist(), target),
        }
        save_grid(best, out / f"counterfactual-{name.replace(',', '').replace(' ', '-')}.png")
    save_grid(images, out / "counterfactual-start.png")
    return {"network": net.name, "start": start, "target": target, "n": n, "rows": rows}


def word_swap_bench(backbone, net, *, n: int, source: TargetSource, start: str, target: str, config: EndToEndConfig,
                    out: Path, quiet: bool, batch: int = 8, inversions: dict | None = None) -> dict:  # fmt: skip
    """Word-swap counterfactuals ``start`` -> ``target`` of the same ``n`` world images as
    :func:`counterfactual_bench` (their captions, the same inversions), at :class:`WordSwapConfig`'s defaults."""
    scenes = _scenes(source, n, start)
    images, background, scene = scenes.images, scenes.background, scene_kind(source.kind)
    swap_config = WordSwapConfig(num_steps=config.num_steps, guidance_scale=config.guidance_scale)
    best, regenerated, flipped, taus = [], [], [], []
    for idx, captions, inverted in _inverted_batches(backbone, scenes, start, config, batch, inversions, "word swap",
                                                     quiet):  # fmt: skip
        result = word_swap_core(backbone, net, images[idx], start, target, prompts=captions, inverted=inverted,
                                config=swap_config)  # fmt: skip
        best.append(result.best)
        regenerated.append(result.reconstruction)
        flipped += result.flipped
        taus += result.chosen_tau
    best, regenerated = torch.cat(best), torch.cat(regenerated)
    change = background_change(best, images, background)
    readings = scene.read_batch(best)
    save_grid(best, out / "word-swap.png")
    row = {
        "target_confidence_above_0.5": proportion(sum(flipped), n),
        "oracle_reads_target_shape": proportion(sum(r.valid and r.shape == target for r in readings), n),
        "background_change_mean_abs": float(change.mean()),
        "chosen_tau_counts": {f"{t:g}": taus.count(t) for t in sorted(set(taus))},
        **fidelity_row(backbone, images, regenerated, best, flipped, target),
    }
    return {"network": net.name, "start": start, "target": target, "n": n, "solver": swap_config.to_dict(),
            "rows": {"word swap": row}}  # fmt: skip


def neuron_images_bench(backbone, net, *, n: int, source: TargetSource, start: str, channel: int,
                        config: EndToEndConfig, batch: int, out: Path, quiet: bool,
                        rows: Sequence[str] = tuple(NEURON_IMAGE_ROWS),
                        inversions: dict | None = None) -> dict:  # fmt: skip
    """Neuron counterfactuals of the counterfactual's ``n`` world images of shape ``start`` (the same inversions):
    ``channel`` of the penultimate layer raised, one optimisation per row of :data:`NEURON_IMAGE_ROWS`; how often
    the activation rose over the image's, the median ratio, the background change and minimality (at most one
    attribute changed)."""
    scenes = _scenes(source, n, start)
    images, masks, background, seed = scenes.images, scenes.masks, scenes.background, scenes.seed
    results = {name: [] for name in rows}
    configs = {name: config if NEURON_IMAGE_ROWS[name][4] is None else
               config.with_overrides(cutouts=NEURON_IMAGE_ROWS[name][4]) for name in rows}  # fmt: skip
    for idx, captions, inverted in _inverted_batches(backbone, scenes, start, config, batch, inversions,
                                                     "neuron images", quiet):  # fmt: skip
        for name in rows:
            regularizers, weights, mask, reinject, _ = NEURON_IMAGE_ROWS[name]
            result = cores.neuron_images_core(
                backbone, net, images[idx], channel, seeds=[seed + i for i in idx], prompts=captions,
                regularizers=regularizers, regularizer_weights=weights,
                mask=_row_mask(mask, masks[idx], backbone, images[idx], inverted, captions, start, config),
                inverted=inverted, reinject=reinject, config=configs[name],
            )  # fmt: skip
            after = [result.activation[b][result.best_iteration(b)] for b in range(len(idx))]
            results[name].append((result.images[0], result.best, result.image_activation, after))
    rows = {}
    for name, parts in results.items():
        regenerated, best = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        image_act = torch.tensor([a for p in parts for a in p[2]])
        after = torch.tensor([a for p in parts for a in p[3]])
        change = background_change(best, images, background)
        rose = (after > image_act).tolist()
        rows[name] = {
            "activation_rose": proportion(sum(rose), n),
            "ratio_after_over_image_median": float((after / image_act.clamp(min=1e-6)).median()),
            "activation_image_mean": float(image_act.mean()),
            "activation_after_mean": float(after.mean()),
            "background_change_mean_abs": float(change.mean()),
            "solver_cutouts": configs[name].cutouts,
            **fidelity_row(backbone, images, regenerated, best, rose, None),
        }
        save_grid(best, out / f"neuron-images-{name.replace(',', '').replace(' ', '-')}.png")
    return {"network": net.name, "start": start, "channel": channel, "n": n, "rows": rows}


class Selection(NamedTuple):
    """The difference selection for class ``y`` on a batch of images."""

    first: torch.Tensor  # the first network's class probabilities (B, classes)
    second: torch.Tensor  # the second network's
    chosen: list[bool]  # the first calls the image class y and the second does not
    values: list[str | None]  # the shortcut attribute as the oracle reads it
    says: list[str]  # the second network's prediction
    follows: list[bool]  # chosen, and showing the shortcut of the class the second predicts


def select(first: Extractor, second: Extractor, y: int, images: torch.Tensor, kind: InvestigationKind) -> Selection:
    """Which ``images`` ``first`` calls class ``y`` and ``second`` does not, and which of those show the shortcut
    (:meth:`InvestigationKind.shows`) of the class ``second`` predicts, by the oracle of the kind's scenes."""
    p1, p2 = _probs(first, images), _probs(second, images)
    chosen = ((p1.argmax(1) == y) & (p2.argmax(1) != y)).tolist()
    says = [second.labels[int(i)] for i in p2.argmax(1)]
    values = [kind.value(r) for r in scene_kind(kind.scene).read_batch(images)]
    follows = [d and kind.shows(v, s) for v, s, d in zip(values, says, chosen, strict=True)]
    return Selection(p1, p2, chosen, values, says, follows)


def unguided_selection(
    backbone: Backbone, first: Extractor, second: Extractor, *, samples: int, seed: int, stride: int,
    config: EndToEndConfig, kind: InvestigationKind, quiet: bool = True,
) -> dict[str, tuple[int, int]]:  # fmt: skip
    """Per class ``y`` of ``first``, the difference selection on ``samples`` plain samples of its prompt (the
    solver's iteration 0, seeds ``seed + stride * y + k``): (kept, of those showing the shortcut)."""
    plain = config.with_overrides(iterations=0)
    counts = {}
    for y, label in enumerate(tqdm(first.labels, desc="unguided baseline", disable=quiet)):
        kept = follows = 0
        for part in _batches(samples, UNGUIDED_BATCH):
            seeds = [seed + stride * y + k for k in part]
            images = cores.difference(backbone, first, second, label, seeds=seeds, prompt=label, config=plain).images[0]
            picked = select(first, second, y, images, kind)
            kept, follows = kept + sum(picked.chosen), follows + sum(picked.follows)
        counts[label] = (kept, follows)
    return counts


def selection_baseline(
    backbone: Backbone, first: Extractor, second: Extractor, *, samples: int, seed: int, config: EndToEndConfig,
    kind: str = DEFAULT_KIND,
) -> dict:  # fmt: skip
    """The difference bench's selection applied to unguided samples: per shape, ``samples`` plain samples of its
    prompt (the solver's iteration 0, seeds ``seed + 1000 * y + k``), kept where ``first`` says the shape and
    ``second`` does not; how many are kept and how many of those show the shortcut of the shape ``second``
    predicts. A shortcut reading of the guided images counts only above this rate."""
    setup = INVESTIGATION_KINDS[kind]
    counts = unguided_selection(backbone, first, second, samples=samples, seed=seed, stride=1000, config=config,
                                kind=setup)  # fmt: skip
    kept, follows = sum(k for k, _ in counts.values()), sum(f for _, f in counts.values())
    entry = {
        "samples_per_class": samples,
        "seed": seed,
        "disagreement": proportion(kept, samples * len(counts)),
        "disagreeing_shortcut_of_second_prediction": proportion(follows, kept),
    }
    return setup.aliased(entry)


def selection_summary(counts: Mapping[str, tuple[int, int]], samples: int, evaluations: int) -> dict:
    """Per-class (kept, showing the shortcut) counts of ``samples`` images per class, as shares: disagreeing
    images, those of them that show the shortcut, and classes with at least one such image."""
    kept, follows = sum(k for k, _ in counts.values()), sum(f for _, f in counts.values())
    return {
        "samples_per_class": samples,
        "network_evaluations_per_class": evaluations,
        "disagreement": proportion(kept, samples * len(counts)),
        "disagreeing_shortcut": proportion(follows, kept),
        "classes_with_shortcut": proportion(sum(f > 0 for _, f in counts.values()), len(counts)),
    }


def guided_evaluations(config: EndToEndConfig) -> int:
    """Forward passes of each network for one guided sample of the end-to-end solver (:data:`EVALUATION_RULE`)."""
    augmented = len(config.loss_weights()) * max(1, config.cutouts)
    return config.iterations + 1 + config.iterations * augmented


def equal_evaluation_baseline(
    backbone: Backbone, first: Extractor, second: Extractor, per_class: Mapping[str, dict], *, samples: int,
    seed: int, config: EndToEndConfig, kind: str = DEFAULT_KIND, quiet: bool = True,
) -> dict | None:  # fmt: skip
    """The guided selection (``per_class`` of :func:`difference_bench`, ``samples`` per class) next to the same
    selection on as many unguided samples per class as the guided samples took network forward passes
    (:data:`EVALUATION_RULE`; seeds ``seed + EQUAL_SEED_OFFSET + EQUAL_SEED_STRIDE * y + k``); None without
    iterations."""
    evaluations = samples * guided_evaluations(config)
    if config.iterations == 0:
        return None
    start = seed + EQUAL_SEED_OFFSET
    counts = unguided_selection(backbone, first, second, samples=evaluations, seed=start, stride=EQUAL_SEED_STRIDE,
                                config=config, kind=INVESTIGATION_KINDS[kind], quiet=quiet)  # fmt: skip
    guided = {label: (c["disagree"], c["disagreeing_shortcut_of_second_prediction"]) for label, c in per_class.items()}
    return {
        "rule": EVALUATION_RULE,
        "guided": {**selection_summary(guided, samples, evaluations), "iterations": config.iterations},
        "unguided": {**selection_summary(counts, evaluations, evaluations), "seed": start},
    }


def _difference_class(first: Extractor, second: Extractor, y: int, plain: torch.Tensor, best: torch.Tensor,
                      kind: InvestigationKind) -> dict:  # fmt: skip
    """One class's counts of the difference bench: the selection on the optimised and on the plain samples."""
    label = first.labels[y]
    guided, unguided = select(first, second, y, best, kind), select(first, second, y, plain, kind)
    off = [d and kind.off(v, label) for v, d in zip(guided.values, guided.chosen, strict=True)]
    entry = {
        "disagree": sum(guided.chosen),
        "disagree_plain": sum(unguided.chosen),
        "confidence_first_mean": float(guided.first[:, y].mean()),
        "confidence_second_mean": float(guided.second[:, y].mean()),
        "confidence_second_plain_mean": float(unguided.second[:, y].mean()),
        "disagreeing_off_shortcut": sum(off),
        "disagreeing_shortcut_of_second_prediction": sum(guided.follows),
        "plain_off_shortcut": sum(kind.off(v, label) for v in unguided.values),
        "shortcut_values": guided.values,
        "second_predicts": guided.says,
    }
    return kind.aliased(entry)


def difference_bench(
    backbone,
    first,
    second,
    *,
    samples: int,
    seed: int,
    config: EndToEndConfig,
    out: Path,
    quiet: bool,
    baseline_samples: int = 0,
    equal_evaluations: bool = False,
    kind: str = DEFAULT_KIND,
) -> dict:
    """Per class, images ``first`` sees as the class and ``second`` does not; the oracle of ``kind``'s scenes reads
    the shortcut attribute (:data:`INVESTIGATION_KINDS`: the colour on shapes32, the tag on patterns64). With
    ``baseline_samples``, the same selection on that many unguided samples per class (from seeds the guided
    samples do not use) is the baseline of the shortcut reading (:func:`selection_baseline`); with
    ``equal_evaluations``, also on as many unguided samples as the guided method's network evaluations
    (:func:`equal_evaluation_baseline`)."""
    setup = INVESTIGATION_KINDS[kind]
    per_class, images_all = {}, []
    for y, label in enumerate(tqdm(first.labels, desc="difference", disable=quiet)):
        result = cores.difference(backbone, first, second, label, seeds=[seed + 1000 * y + k for k in range(samples)],
                                  prompt=label, loss="conf", config=config)  # fmt: skip
        per_class[label] = _difference_class(first, second, y, result.images[0], result.best, setup)
        images_all.append(result.best)
    save_grid(torch.cat(images_all), out / "difference.png")
    total = len(first.labels) * samples
    counts = {key: sum(c[key] for c in per_class.values()) for key in (
        "disagree", "disagree_plain", "disagreeing_off_shortcut", "disagreeing_shortcut_of_second_prediction",
        "plain_off_shortcut")}  # fmt: skip
    disagree = counts["disagree"]
    entry = {
        "first": first.name,
        "second": second.name,
        "shortcut": {"attribute": setup.attribute, "cue": dict(setup.cue)},
        "samples_per_class": samples,
        "classes_with_disagreement": sum(c["disagree"] > 0 for c in per_class.values()),
        "classes": len(first.labels),
        "disagreement": proportion(disagree, total),
        "disagreement_plain": proportion(counts["disagree_plain"], total),
        "disagreeing_off_shortcut": proportion(counts["disagreeing_off_shortcut"], disagree),
        "disagreeing_shortcut_of_second_prediction": proportion(
            counts["disagreeing_shortcut_of_second_prediction"], disagree
        ),
        "plain_off_shortcut": proportion(counts["plain_off_shortcut"], total),
        "selection_baseline": selection_baseline(backbone, first, second, samples=baseline_samples, seed=seed + 500,
                                                 config=config, kind=kind) if baseline_samples else None,
        "equal_evaluations": equal_evaluation_baseline(backbone, first, second, per_class, samples=samples, seed=seed,
                                                       config=config, kind=kind, quiet=quiet)
        if equal_evaluations else None,
        "per_class": per_class,
    }  # fmt: skip
    return setup.aliased(entry)


@torch.no_grad()
def channel_means(net, images: torch.Tensor, channels: Sequence[int]) -> list[float]:
    """Mean activation of ``channels`` of the penultimate layer over ``images`` (held-out world images)."""
    device = next(net.parameters()).device
    acts = activation(net.network, net.preprocess(images.to(device)), last_linear(net.network), True).float()
    return [float(acts[:, c].mean()) for c in channels]


def neuron_bench(
    backbone, net, *, channels: Sequence[int], samples: int, seed: int, config: EndToEndConfig, out: Path, quiet: bool,
    held_out: torch.Tensor | None = None,
) -> dict:  # fmt: skip
    """Maximise each channel of the penultimate layer from ``samples`` plain samples. Two gains: over the plain
    sample (the ratio; it explodes when the sample barely fires the channel and stalls when it already fires it
    strongly) and over the channel's mean activation on ``held_out`` images (scale-free, the bar's measure)."""
    per_channel, images_all = {}, []
    for c in tqdm(channels, desc="neuron", disable=quiet):
        result = cores.neuron(backbone, net, c, seeds=[seed + k for k in range(samples)], prompt="", config=config)
        losses = result.solver.losses  # minus the activation, without augmentation
        before, after = -losses[0], -losses.gather(0, result.solver.best_iteration[None])[0]
        per_channel[int(c)] = {"before": before.tolist(), "after": after.tolist()}
        images_all.append(torch.stack([result.images[0], result.best], 1).flatten(0, 1))
    save_grid(torch.cat(images_all), out / "neuron.png")
    before = torch.tensor([v for c in per_channel.values() for v in c["before"]])
    after = torch.tensor([v for c in per_channel.values() for v in c["after"]])
    ratio = after / before.clamp_min(1e-6)
    gains = {}
    if held_out is not None:
        means = channel_means(net, held_out, list(per_channel))
        for entry, mean in zip(per_channel.values(), means, strict=True):
            entry["held_out_mean"] = mean
        gain = torch.tensor([a / max(c["held_out_mean"], 1e-6) for c in per_channel.values() for a in c["after"]])
        gains = {"held_out_images": len(held_out), "gain_over_held_out_mean_median": float(gain.median()),
                 "gain_over_held_out_mean_at_least_3": proportion(int((gain >= 3).sum()), len(gain))}  # fmt: skip
    return {
        "network": net.name,
        "layer": "input of the last linear layer",
        "channels": [int(c) for c in channels],
        "samples_per_channel": samples,
        "activation_before_mean": float(before.mean()),
        "activation_after_mean": float(after.mean()),
        "ratio_median": float(ratio.median()),
        "ratio_at_least_3": proportion(int((ratio >= 3).sum()), len(ratio)),
        **gains,
        "per_channel": per_channel,
    }


def _networks(kind: str, first: str | None, second: str | None, weights: Mapping[str, str | Path]) -> tuple[str, str]:
    """The network under study and the difference pair's second: the given ones, else the kind's; weights files
    must be for one of them."""
    first, second = first or INVESTIGATION_KINDS[kind].network, second or INVESTIGATION_KINDS[kind].second
    stray = [spec for spec in weights if spec not in (first, second)]
    if stray:
        raise FeatscopeError(f"weights given for {stray[0]!r}, which is neither the network under study ({first}) "
                             f"nor the second network of the difference ({second})")  # fmt: skip
    return first, second


def run_investigation_bench(
    out: str | Path,
    methods: Sequence[str] = METHODS,
    *,
    n: int = 32,
    split: str | None = DEFAULT_SPLIT,
    seed: int | None = None,
    backbone: str = "world:ddpm",
    first: str | None = None,
    second: str | None = None,
    extractor_weights: Mapping[str, str | Path] | None = None,
    batch: int = 8,
    channels: Sequence[int] = (0, 1, 2, 3),
    rows: Sequence[str] | None = None,
    device: str = "auto",
    quiet: bool = False,
    overwrite: bool = False,
    **settings,
) -> dict:
    """Run the chosen investigation measurements on the world and write results.json and results.md to ``out``.

    The scenes are of the kind of the backbone's image size (shapes32 at 32 px, patterns64 at 64 px); ``first``
    (the network under study) and ``second`` (the difference pair's other network) default to the kind's
    (:data:`INVESTIGATION_KINDS`), and ``extractor_weights`` maps either's spec to a local weights file.
    ``n`` is the number of counterfactual images (from the evaluation ``split``, or ``seed``'s stream; see
    :class:`~featscope.bench.targets.TargetSource`), and the number of difference samples per shape and neuron
    samples per neuron (each of ``channels``) is ``max(1, n // 8)``; ``rows``: the counterfactual rows of
    :data:`ROWS` and the neuron-images rows of :data:`NEURON_IMAGE_ROWS` to run (None: all; word swap and
    neuron-images, on the first of ``channels``, start from the counterfactual's inversions). ``settings``
    override the backbone's end-to-end defaults (:func:`~featscope.solvers.configs.endtoend_defaults`).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise FeatscopeError(f"unknown investigation method(s) {unknown}; choose from {', '.join(METHODS)}")
    rows = [*ROWS, *NEURON_IMAGE_ROWS] if rows is None else list(rows)
    bad_rows = [r for r in rows if r not in ROWS and r not in NEURON_IMAGE_ROWS]
    if bad_rows or not rows:
        raise FeatscopeError(f"unknown row(s) {bad_rows}; choose from: {'; '.join([*ROWS, *NEURON_IMAGE_ROWS])}")
    for method, known in (("counterfactual", ROWS), ("neuron-images", NEURON_IMAGE_ROWS)):
        if method in methods and not any(r in known for r in rows):
            raise FeatscopeError(f"no {method} row among the rows given; add one of: {'; '.join(known)}")
    config = _config(settings, backbone)
    out, weights = Path(out), dict(extractor_weights or {})
    check_out(out, overwrite)
    torch_device = resolve_device(device)
    model = load_backbone(backbone, device=torch_device)
    kind = backbone_kind(model)
    first, second = _networks(kind, first, second, weights)
    out.mkdir(parents=True, exist_ok=True)
    net = load_extractor(first, weights=weights.get(first), device=torch_device)
    source = TargetSource(split, seed, kind)
    seed = source.noise_seed
    files = {"extractor_weights": {k: str(v) for k, v in weights.items()}} if weights else {}
    report: dict = {"config": {"n": n, **source.record(), "backbone": backbone, "first": first, "second": second,
                               **files, "solver": asdict(config)}, "machine": machine(), "results": {}}  # fmt: skip
    small = max(1, n // 8)
    inversions: dict = {}
    for method in methods:
        tic = time.time()
        if method == "counterfactual":
            entry = counterfactual_bench(model, net, n=n, source=source, start="circle", target="square",
                                         config=config, batch=batch, out=out, quiet=quiet,
                                         rows=[r for r in rows if r in ROWS], inversions=inversions)  # fmt: skip
        elif method == "word-swap":
            entry = word_swap_bench(model, net, n=n, source=source, start="circle", target="square",
                                    config=config, batch=batch, out=out, quiet=quiet,
                                    inversions=inversions)  # fmt: skip
        elif method == "difference":
            other = load_extractor(second, weights=weights.get(second), device=torch_device)
            entry = difference_bench(model, net, other, samples=small, seed=seed, config=config, out=out,
                                     quiet=quiet, baseline_samples=n, equal_evaluations=True, kind=kind)  # fmt: skip
        elif method == "neuron-images":
            entry = neuron_images_bench(model, net, n=n, source=source, start="circle", channel=channels[0],
                                        config=config, batch=batch, out=out, quiet=quiet,
                                        rows=[r for r in rows if r in NEURON_IMAGE_ROWS],
                                        inversions=inversions)  # fmt: skip
        else:
            held_out = to_tensor(source.images(HELD_OUT_IMAGES)[0])
            neuron_config = _config(settings, backbone, "neuron")
            entry = neuron_bench(model, net, channels=channels, samples=small, seed=seed, config=neuron_config,
                                 out=out, quiet=quiet, held_out=held_out)  # fmt: skip
            entry["solver"] = asdict(neuron_config)  # the neurons' own defaults (more iterations on the world)
        entry["seconds"] = time.time() - tic
        entry["peak_memory_mb"] = peak_memory_mb(torch_device)
        report["results"][method] = entry
        atomic_write_json(out / RESULTS, report)
    atomic_write_text(out / "results.md", investigation_markdown(report))
    return report


def _rate(entry: dict) -> str:
    return f"{format_proportion(entry)} ({entry['successes']}/{entry['total']})"


def _cost(entry: dict, images: int) -> str:
    """Wall time, throughput and peak memory of one measurement (``images`` optimised images in all)."""
    per_hour = images * 3600 / max(entry["seconds"], 1e-9)
    return (
        f"\n{entry['seconds']:.0f} s in all: {images} optimised images, {per_hour:.0f} images per hour, "
        f"peak memory {entry.get('peak_memory_mb', float('nan')):.0f} MB."
    )


def _fidelity_table(rows: dict, *, minimal: str = "only shape changed", moved: str = "flipped",
                    attributes: Sequence[str] = ("color", "size", "position", "background")) -> list[str]:  # fmt: skip
    """Minimality and reconstruction per row: shares with 95% intervals (:func:`fidelity_row`); "not checked" where
    the backbone is not a ``world:`` one (the oracle then reads no minimality) or has no reconstruction threshold.
    ``minimal`` and ``moved`` say what minimal and a success mean; ``attributes``: the changes shown."""
    lines = [f"| setting | minimal ({minimal}) | clean ({moved}, minimal, reconstruction held) | "
             f"poor reconstruction | unreadable | changed (of the readable): {' / '.join(attributes)} |",
             "|---|---|---|---|---|---|"]  # fmt: skip

    def rate(entry: dict | None) -> str:
        return "not checked" if entry is None else _rate(entry)

    for name, row in rows.items():
        changes = row.get("changed", {})
        changed = " / ".join(rate(changes.get(a)) for a in attributes)
        poor, unreadable = rate(row.get("poor_reconstruction")), rate(row.get("unreadable"))
        lines.append(f"| {name} | {rate(row.get('minimal'))} | {rate(row['clean'])} | {poor} | {unreadable} | "
                     f"{changed} |")  # fmt: skip
    return lines


def _neuron_images_lines(r: dict) -> list[str]:
    """Neuron counterfactuals of images: the activation, the background and minimality per row."""
    lines = [f"## Neuron counterfactuals of {r['n']} {r['start']} images ({r['network']}, channel {r['channel']} "
             "raised)", "",
             "| setting | activation rose | median after / image | background change |",
             "|---|---|---|---|"]  # fmt: skip
    for name, row in r["rows"].items():
        lines.append(f"| {name} | {_rate(row['activation_rose'])} | {row['ratio_after_over_image_median']:.2f} | "
                     f"{row['background_change_mean_abs']:.4f} |")  # fmt: skip
    table = _fidelity_table(r["rows"], minimal="at most one attribute changed", moved="rose",
                            attributes=("shape", "color", "size", "position", "background"))  # fmt: skip
    return [*lines, "", *table, _cost(r, len(r["rows"]) * r["n"]), ""]


def _equal_evaluation_lines(r: dict) -> list[str]:
    """The guided and the unguided selection at equal network evaluations, as a table."""
    e = r["equal_evaluations"]
    lines = ["", f"At equal network evaluations ({e['rule']}):", "",
             "| selection | samples per class | network evaluations per class | disagreeing | "
             "of those, showing the shortcut | classes with a shortcut image |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name in ("guided", "unguided"):
        row = e[name]
        lines.append(f"| {name} | {row['samples_per_class']} | {row['network_evaluations_per_class']} | "
                     f"{_rate(row['disagreement'])} | {_rate(row['disagreeing_shortcut'])} | "
                     f"{_rate(row['classes_with_shortcut'])} |")  # fmt: skip
    return lines


def _difference_lines(r: dict, kind: InvestigationKind) -> list[str]:
    """The difference measurement: disagreement, the shortcut reading and its baselines."""
    shows = kind.shows_text.format(second=r["second"])
    lines = [
        f"## Classifier difference {r['first']} vs {r['second']} ({r['samples_per_class']} per class)", "",
        f"- classes with at least one disagreeing image: {r['classes_with_disagreement']} / {r['classes']}",
        f"- disagreement after optimisation: {_rate(r['disagreement'])}; among plain samples: "
        f"{_rate(r['disagreement_plain'])}",
        f"- disagreeing images whose {kind.attribute} is not the class's shortcut {kind.attribute}: "
        f"{_rate(r['disagreeing_off_shortcut'])}",
        f"- disagreeing images {shows}: {_rate(r['disagreeing_shortcut_of_second_prediction'])}",
        f"- plain samples off the shortcut {kind.attribute}: {_rate(r['plain_off_shortcut'])}",
    ]  # fmt: skip
    b = r.get("selection_baseline")
    if b:
        lines.append(f"- the same selection on {b['samples_per_class']} unguided samples per class: kept "
                     f"{_rate(b['disagreement'])}; those {shows}: "
                     f"{_rate(b['disagreeing_shortcut_of_second_prediction'])}")  # fmt: skip
    if r.get("equal_evaluations"):
        lines += _equal_evaluation_lines(r)
    return [*lines, _cost(r, r["disagreement"]["total"]), ""]


def investigation_markdown(report: dict) -> str:
    """The results as Markdown tables."""
    config = report["config"]
    lines = [
        f"# Investigation bench on the world ({config['backbone']}, {config['kind']} scenes)", "",
        f"Networks: {config['first']} (under study), {config['second']} (the difference's second).", "",
    ]  # fmt: skip
    results = report["results"]
    if "counterfactual" in results:
        r = results["counterfactual"]
        lines += [
            f"## Counterfactuals {r['start']} -> {r['target']} ({r['network']}, {r['n']} images)", "",
            "| setting | target conf > 0.5 | mean target conf | oracle reads target | background change | "
            "inversion's background change |",
            "|---|---|---|---|---|---|",
        ]  # fmt: skip
        for name, row in r["rows"].items():
            lines.append(
                f"| {name} | {_rate(row['target_confidence_above_0.5'])} | {row['target_confidence_mean']:.3f} | "
                f"{_rate(row['oracle_reads_target_shape'])} | {row['background_change_mean_abs']:.4f} | "
                f"{row['background_change_of_inversion_mean_abs']:.4f} |"
            )
        lines += ["", *_fidelity_table(r["rows"]), _cost(r, len(r["rows"]) * r["n"]), ""]
    if "word-swap" in results:
        r = results["word-swap"]
        row = r["rows"]["word swap"]
        lines += [
            f"## Word swap {r['start']} -> {r['target']} ({r['network']}, {r['n']} images, the same inversions)", "",
            f"- target conf > 0.5: {_rate(row['target_confidence_above_0.5'])}; oracle reads target: "
            f"{_rate(row['oracle_reads_target_shape'])}; background change {row['background_change_mean_abs']:.4f}; "
            f"chosen tau (images): {row['chosen_tau_counts']}", "",
            *_fidelity_table(r["rows"]), _cost(r, r["n"]), "",
        ]  # fmt: skip
    if "difference" in results:
        lines += _difference_lines(results["difference"], INVESTIGATION_KINDS[config["kind"]])
    if "neuron-images" in results:
        lines += _neuron_images_lines(results["neuron-images"])
    if "neuron" in results:
        r = results["neuron"]
        lines += [
            f"## Neurons of {r['network']} ({r['layer']}, channels {r['channels']})", "",
            f"- mean activation: plain sample {r['activation_before_mean']:.3g}, "
            f"after {r['activation_after_mean']:.3g}",
            f"- median ratio after / before: {r['ratio_median']:.2f}; at least 3x: {_rate(r['ratio_at_least_3'])}",
        ]  # fmt: skip
        if "gain_over_held_out_mean_median" in r:
            lines.append(f"- median gain over the channel's mean on {r['held_out_images']} held-out images: "
                         f"{r['gain_over_held_out_mean_median']:.2f}; at least 3x: "
                         f"{_rate(r['gain_over_held_out_mean_at_least_3'])}")  # fmt: skip
        lines += [_cost(r, r["ratio_at_least_3"]["total"]), ""]
    return "\n".join(lines)
