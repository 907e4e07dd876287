"""The world's seed ranges: the pools the shipped models trained on, and two evaluation splits none of them saw.

A world image is a deterministic function of its record, and ``generate(n, seed)`` draws records from one
random stream per seed. The shipped models trained on these streams:

- ``world:ddpm`` (and the epsilon model it was fine-tuned from): ``generate(30_000, 0)``;
- the embedded FeatInv ControlNet: ``generate(20_000, 0)`` (a prefix of the same stream);
- ``world:shape-net``, ``color-net``, ``spurious-net``: 64 records per step from ``default_rng([0, 7])``,
  for the steps recorded in their weights' metadata;
- on ``patterns64`` scenes, ``world:latent``: ``generate(30_000, 0)`` of that kind (``LATENT_POOL``), and the
  64 px networks (``shape-net-64``, ``color-net-64``, ``pattern-net``, ``tag-net``) as the 32 px ones.

Settings are chosen on the **tuning** split and reported once on the **test** split (docs/evaluation.md).
Every scene kind (``world.kinds``) has its splits, drawn from the same seeds with that kind's records. Of the
``patterns64`` pools only the latent world's holds a split image (test image 263); ``training_clashes`` over
``training_pools("patterns64")`` finds no other (computed once: its 241,200 classifier records take minutes).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from featscope.errors import FeatscopeError
from featscope.world.kinds import DEFAULT_KIND, scene_kind
from featscope.world.render import WorldRecord

TUNING_SEED = 7_000_000
TEST_SEED = 8_000_000
SPLITS = {"tuning": TUNING_SEED, "test": TEST_SEED}
SPLIT_STREAM = 1024  # records drawn per split; those a shipped model trained on (pixel for pixel) are skipped
EXCLUDED = {  # stream indices whose image is in a training pool (tests/test_world_splits.py recomputes them)
    "tuning": (117, 548, 569, 665, 718, 757, 818, 1009),
    "test": (66, 85, 245, 349, 362, 442, 774),
}
EXCLUDED_BY_KIND = {DEFAULT_KIND: EXCLUDED, "patterns64": {"tuning": (), "test": (263,)}}  # patterns64: world:latent
DDPM_POOL = (30_000, 0)  # (images, seed) of world:ddpm's training pool
FEATINV_POOL = (20_000, 0)
LATENT_POOL = (30_000, 0)  # patterns64 scenes: world:latent's pool (world.latent_train.POOL_SIZE, seed 0)
WEIGHTS = Path(__file__).parent / "weights"


def split_records(n: int, split: str, kind: str = DEFAULT_KIND) -> list[WorldRecord]:
    """The first ``n`` records of an evaluation split (``tuning`` or ``test``) of a scene kind: its seed's
    stream without the images a shipped model trained on."""
    if split not in SPLITS:
        raise FeatscopeError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    excluded = EXCLUDED_BY_KIND[scene_kind(kind).name][split]
    size = SPLIT_STREAM - len(excluded)
    if not 0 <= n <= size:
        raise FeatscopeError(f"the {split} split holds {size} images, not {n}; ask for at most {size}")
    skipped = set(excluded)
    return [r for i, r in enumerate(records(SPLIT_STREAM, SPLITS[split], kind)) if i not in skipped][:n]


def split_images(n: int, split: str, kind: str = DEFAULT_KIND, **fixed: str) -> tuple[np.ndarray, list[WorldRecord]]:
    """``n`` images (n, size, size, 3) uint8 of an evaluation split of a scene kind and their records (like
    ``generate``); with ``fixed`` attributes (``shape="circle"``), the split's first ``n`` images that have them."""
    scene = scene_kind(kind)
    if fixed:
        pool = split_records(SPLIT_STREAM - len(EXCLUDED_BY_KIND[kind].get(split, ())), split, kind)
        drawn = [r for r in pool if all(getattr(r, k) == v for k, v in fixed.items())][:n]
        if len(drawn) < n:
            what = ", ".join(f"{k}={v}" for k, v in fixed.items())
            raise FeatscopeError(f"the {split} split holds {len(drawn)} images with {what}, not {n}; ask for fewer")
    else:
        drawn = split_records(n, split, kind)
    if not drawn:
        return np.zeros((0, scene.image_size, scene.image_size, 3), np.uint8), drawn
    return np.stack([scene.render(r) for r in drawn]), drawn


def records(n: int, seed: int, kind: str = DEFAULT_KIND) -> list[WorldRecord]:
    """The records of ``generate(n, seed)`` (of ``scene_kind(kind).generate``), without drawing the images."""
    rng = np.random.default_rng(seed)
    sample = scene_kind(kind).sample
    return [sample(rng) for _ in range(n)]


def classifier_pool(task: str, weights: str | Path | None = None) -> list[WorldRecord]:
    """Every record a world classifier saw in training (its steps and batch from its weights file: the shipped
    one's by default)."""
    from safetensors import safe_open

    from featscope.world.train import classifier_records

    with safe_open(str(weights or WEIGHTS / f"{task}.safetensors"), "pt") as handle:
        metrics = json.loads(handle.metadata()["metrics"])
    rng = np.random.default_rng([metrics["seed"], 7])
    return [r for _ in range(metrics["steps"]) for r in classifier_records(task, metrics["batch_size"], rng)]


def training_pools(kind: str = DEFAULT_KIND) -> Iterator[tuple[str, list[WorldRecord]]]:
    """(model, records) for every shipped model's training pool of ``kind`` scenes."""
    from featscope.world.classifier_tasks import TASKS

    if kind == DEFAULT_KIND:
        yield "world:ddpm", records(*DDPM_POOL)
        yield "featinv-shape-net", records(*FEATINV_POOL)
    else:
        yield "world:latent", records(*LATENT_POOL, kind)
    for task, spec in TASKS.items():
        if spec.kind == kind:
            yield f"world:{task}", classifier_pool(task)


def _key(record: WorldRecord) -> tuple[str, ...]:
    return tuple(record.attributes().values())


def _near(a: WorldRecord, b: WorldRecord) -> bool:
    """Close enough in position and rotation that the two records could draw the same pixels (pixel-identical
    world images measured: at most 0.11 px and 0.75 degrees apart)."""
    return abs(a.cx - b.cx) < 0.5 and abs(a.cy - b.cy) < 0.5 and abs(a.angle - b.angle) < 1.5


def _digest(record: WorldRecord, kind: str = DEFAULT_KIND) -> str:
    return hashlib.sha1(scene_kind(kind).render(record).tobytes()).hexdigest()


def training_clashes(
    candidates: list[WorldRecord], pools: dict[str, list[WorldRecord]] | None = None, kind: str = DEFAULT_KIND
) -> dict[int, str]:
    """Index -> model, for each candidate whose image is pixel for pixel one a shipped model trained on.

    Only pool records with the same attributes and nearly the same position and rotation can draw the same
    image; those are drawn (as ``kind`` scenes) and compared with the candidates' images. ``pools``:
    :func:`training_pools` by default.
    """
    by_key: dict[tuple[str, ...], list[int]] = {}
    for i, record in enumerate(candidates):
        by_key.setdefault(_key(record), []).append(i)
    digests: dict[int, str] = {}
    found: dict[int, str] = {}
    for model, pool in (pools or dict(training_pools())).items():
        for record in pool:
            for i in by_key.get(_key(record), ()):
                if i in found or not _near(record, candidates[i]):
                    continue
                digests.setdefault(i, _digest(candidates[i], kind))
                if _digest(record, kind) == digests[i]:
                    found[i] = model
    return found
