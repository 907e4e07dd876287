"""``featscope bench visualize``: class logits and neurons visualised by featscope and by what researchers use today.

A *unit* of the network under study is a class logit (a channel of the output of its last linear layer) or a
neuron (a channel of that layer's input: the penultimate features, DiG-IN's neurons). Every row makes ``samples``
images per unit, and every image is scored the same way, on the 8-bit image that is saved:

- reached: for a class, the network gives the class a probability above 0.5; for a neuron, the activation is at
  least 3x the channel's mean over the first 512 images of the test split (the investigation bench's bar);
- at least the best exemplar: the unit's value (logit or activation) is at least the highest over the exemplar
  pool, the whole tuning split;
- valid: the world oracle finds one clear object in the image (is it an image of the world at all);
- shows the class (class logits): the oracle reads the class from the image (for world:shape-net, its shape);
- network evaluations and wall seconds per image.

Rows (:data:`ROWS`): ``featscope``, the end-to-end neuron visualisation users run
(:func:`featscope.investigate.cores.neuron`, the core of :func:`featscope.investigate.neuron`, with the backbone's
neuron defaults; a class logit is a neuron of the logits layer), scored on its best iterate, and its plain sample
(iteration 0) as the ``unguided`` row; ``lucent`` (``render_vis`` with ``objectives.channel``), Horama's ``maco``
and Feature Accentuation (``accentuation``, from featscope's plain sample of the same seed), each at featscope's
network evaluations per image; ``exemplars``: the ``samples`` pool images with the highest value. A peer row whose
package is missing is skipped with a one-line note (:func:`featscope.bench.peers.missing_note`).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from featscope._version import __version__
from featscope.backbones import load_backbone
from featscope.bench import peers
from featscope.bench.report import unit_grid_figure
from featscope.bench.run import RESULTS, backbone_kind, check_out, machine
from featscope.bench.stats import format_proportion, proportion
from featscope.devices import resolve_device
from featscope.errors import FeatscopeError
from featscope.extractors import load_extractor
from featscope.extractors.base import Extractor
from featscope.images import save_image, to_tensor, to_uint8
from featscope.investigate import cores
from featscope.investigate.inputs import template
from featscope.investigate.neuron_prompts import candidate_words, choose_prompt
from featscope.objectives import activation, class_index, last_linear, pick_channel, run_network
from featscope.progress import tqdm
from featscope.runs import atomic_write_bytes, atomic_write_json, atomic_write_text
from featscope.solvers.configs import EndToEndConfig, endtoend_defaults
from featscope.world.kinds import DEFAULT_KIND, kind_of_size, scene_kind
from featscope.world.splits import EXCLUDED_BY_KIND, SPLIT_STREAM, split_images

ROWS = ("featscope", "lucent", "maco", "accentuation", "exemplars")
CHOSEN = "chosen"  # ``prompt=``: DiG-IN's prompt, chosen per unit
UNGUIDED = "unguided"  # featscope's plain sample (iteration 0): a row of its own wherever featscope runs
HELD_OUT_IMAGES = 512  # the test split's first images, over which a neuron's mean activation is taken
NEURON_BAR = 3.0  # a neuron is reached at this multiple of its held-out mean activation
CLASS_BAR = 0.5  # a class is reached above this probability
VALUE_BATCH = 256  # images per pass when measuring a pool
EXEMPLAR_TOLERANCE = 1e-4  # relative: a value equal to the pool's best up to float rounding counts as reaching it


@dataclass(frozen=True)
class Unit:
    """One visualisation target: a class logit (``kind`` "class") or a neuron (``kind`` "neuron")."""

    kind: str
    channel: int
    name: str  # the class name, or "neuron C"
    layer: str  # the network's last linear layer
    inputs: bool  # its input (a neuron) or its output (a class logit)

    @property
    def slug(self) -> str:
        return f"class-{self.name}" if self.kind == "class" else f"neuron-{self.channel}"

    @property
    def core_layer(self) -> str | None:
        """The ``layer`` argument of ``cores.neuron``: None is the input of the last linear layer."""
        return None if self.inputs else self.layer


def featscope_evaluations(config: EndToEndConfig) -> int:
    """Forward passes of the network per image of the end-to-end solver, by the investigation bench's rule: one
    scoring pass per iterate (iterations + 1) and, per iteration, loss_steps x cutouts augmented passes."""
    return config.iterations + 1 + config.iterations * len(config.loss_weights()) * max(1, config.cutouts)


def check_rows(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """The rows that can run, in ``ROWS`` order, and a one-line note per peer row whose package is missing;
    unknown names fail."""
    unknown = [name for name in names if name not in ROWS]
    if unknown:
        raise FeatscopeError(f"unknown visualisation row {unknown[0]!r}; use any of {', '.join(ROWS)}")
    if not names:
        raise FeatscopeError(f"no row given; pass at least one of {', '.join(ROWS)}")
    notes = {name: peers.missing_note(name) for name in dict.fromkeys(names) if name in peers.PACKAGES}
    return [name for name in ROWS if name in names and not notes.get(name)], [n for n in notes.values() if n]


def units_of(net: Extractor, classes: Sequence[int | str] | None, channels: Sequence[int]) -> list[Unit]:
    """The class-logit units (``classes`` None: every class of the network) and then the neurons, checked."""
    layer = last_linear(net.network)
    size = tuple(net.input_size or (224, 224))
    device = next(net.parameters()).device
    with torch.no_grad():
        x = net.preprocess(torch.zeros(1, 3, *size, device=device))
        outputs = activation(net.network, x, layer, False).shape[1]
        inputs = activation(net.network, x, layer, True).shape[1]
    labels = list(getattr(net, "labels", None) or [])
    chosen = (labels or list(range(outputs))) if classes is None else list(classes)
    units = []
    for label in chosen:
        index = class_index(net, int(label) if isinstance(label, str) and label.isdigit() else label)
        if not 0 <= index < outputs:
            raise FeatscopeError(f"class {label} is out of range: {net.name} has {outputs} classes")
        name = str(labels[index]) if labels else str(index)
        units.append(Unit("class", index, name, layer, False))
    for channel in channels:
        if not 0 <= int(channel) < inputs:
            raise FeatscopeError(f"channel {channel} is out of range: the input of {layer!r} has {inputs} channels")
        units.append(Unit("neuron", int(channel), f"neuron {int(channel)}", layer, True))
    return units


def unit_score(net: Extractor, unit: Unit, images: torch.Tensor) -> torch.Tensor:
    """The unit's value on images in [0, 1] (B, 3, H, W), differentiable: the objective of the peer rows."""
    x = net.preprocess(images)
    return pick_channel(activation(net.network, x, unit.layer, unit.inputs).float(), unit.channel)


@torch.no_grad()
def measure(net: Extractor, units: Sequence[Unit], images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per unit and uint8 image (B, H, W, 3): the unit's value (U, B), and the network's probability of the
    unit's class (U, B; NaN for a neuron); one pass of the network per image, ``VALUE_BATCH`` at a time."""
    device = next(net.parameters()).device
    module = dict(net.network.named_modules())[units[0].layer]
    seen: dict[bool, torch.Tensor] = {}
    handle = module.register_forward_hook(lambda _, args, output: seen.update({True: args[0], False: output}))
    values, probabilities = [], []
    try:
        for start in range(0, len(images), VALUE_BATCH):
            x = to_tensor(images[start : start + VALUE_BATCH]).to(device)
            probs = run_network(net, x).float().softmax(1).cpu()
            values.append(torch.stack([pick_channel(seen[u.inputs].float(), u.channel).cpu() for u in units]))
            nan = torch.full((len(x),), float("nan"))
            probabilities.append(torch.stack([nan if u.inputs else probs[:, u.channel] for u in units]))
    finally:
        handle.remove()
    return torch.cat(values, 1).numpy(), torch.cat(probabilities, 1).numpy()


def class_attribute(kind: str, labels: Sequence[str]) -> str | None:
    """The oracle attribute whose values hold every class name (shape-net: shape), None if none does."""
    attributes = scene_kind(kind).attributes
    return next((name for name, values in attributes.items() if labels and set(labels) <= set(values)), None)


@dataclass
class Made:
    """What a row made for one unit: images (samples, H, W, 3) uint8, their seeds, evaluations and seconds per
    image, and anything else the row records per unit."""

    images: np.ndarray
    seeds: list[int | None]
    evaluations: int
    seconds: float
    extra: dict | None = None


@dataclass
class Context:
    """What the rows share."""

    net: Extractor
    units: list[Unit]
    samples: int
    seed: int
    config: EndToEndConfig
    backbone: object | None
    size: int
    pool: np.ndarray
    pool_values: np.ndarray
    pool_seconds: float
    folder: Path
    plain: dict  # unit slug -> featscope's plain samples (tensor, samples x 3 x H x W), for Feature Accentuation
    prompt: str  # featscope's prompt: "" (none) or CHOSEN (DiG-IN's choice per unit, as investigate neuron)

    @property
    def budget(self) -> int:
        """featscope's network evaluations per image, the peers' budget."""
        return featscope_evaluations(self.config)

    def seeds(self, t: int) -> list[int]:
        """Unit t's seeds: sample k of unit t is seed + t * samples + k."""
        return [self.seed + t * self.samples + k for k in range(self.samples)]


def peer_settings(row: str, budget: int) -> dict:
    """The peer's settings (``peers``' for 32 px world images) with its steps set to spend about ``budget``
    network evaluations per image: lucent one per step, Horama one per crop."""
    if row == "lucent":
        return {**peers.LUCENT, "steps": budget}
    s = peers.settings_of(row, peers.ACCENTUATION_VISUALIZE if row == "accentuation" else None)
    return {**s, "steps": max(1, budget // s["crops"])}


def run_featscope(ctx: Context, t: int, unit: Unit) -> tuple[Made, Made]:
    """featscope's best iterates and plain samples (iteration 0) for unit t, from ``cores.neuron``."""
    seeds = ctx.seeds(t)
    tic = time.perf_counter()
    prompt, choice = ctx.prompt, None
    if prompt == CHOSEN:
        words = candidate_words(ctx.net, unit.core_layer, unit.channel)
        choice = choose_prompt(ctx.backbone, ctx.net, unit.channel, words=words, template=template(None, ctx.backbone),
                               layer=unit.core_layer, config=ctx.config)  # fmt: skip
        prompt = choice.prompt
    result = cores.neuron(ctx.backbone, ctx.net, unit.channel, layer=unit.core_layer, seeds=seeds, prompt=prompt,
                          config=ctx.config, quiet=True)  # fmt: skip
    seconds = (time.perf_counter() - tic) / len(seeds)
    ctx.plain[unit.slug] = result.images[0].detach().cpu()
    iterations = [result.best_iteration(b) for b in range(len(seeds))]
    before_after = [[acts[0], acts[i]] for acts, i in zip(result.activation, iterations, strict=True)]
    extra = {"best_iteration": iterations, "core_activation_before_after": before_after,
             "prompt": [prompt] * len(seeds)}  # fmt: skip
    if choice is not None:
        extra["prompt_choice"] = [choice.to_dict()] * len(seeds)
    best = Made(to_uint8(result.best), list(seeds), ctx.budget, seconds, extra)
    return best, Made(to_uint8(result.images[0]), list(seeds), 0, float("nan"))  # timed within featscope's run


def plain_samples(ctx: Context, t: int, unit: Unit) -> torch.Tensor:
    """featscope's plain samples of unit t's seeds (iteration 0 of the end-to-end solver, no optimisation)."""
    if unit.slug not in ctx.plain:
        plain = cores.neuron(ctx.backbone, ctx.net, unit.channel, layer=unit.core_layer, seeds=ctx.seeds(t),
                             prompt="", config=ctx.config.with_overrides(iterations=0), quiet=True)  # fmt: skip
        ctx.plain[unit.slug] = plain.images[0].detach().cpu()
    return ctx.plain[unit.slug]


def run_peer(ctx: Context, row: str, t: int, unit: Unit) -> Made:
    """One peer row's images for unit t, through the peer's own public API."""
    settings, seeds = peer_settings(row, ctx.budget), ctx.seeds(t)
    device = next(ctx.net.parameters()).device
    if row == "lucent":
        layer = peers.lucent_layer(ctx.net.network, unit.layer, unit.inputs, ctx.size)
        tic = time.perf_counter()
        images = peers.lucent_visualize(ctx.net.network, ctx.net.preprocess, layer, unit.channel, ctx.samples,
                                        ctx.size, seeds[0], settings)  # fmt: skip
        seconds = (time.perf_counter() - tic) / ctx.samples
        return Made(images, [seeds[0]] + [None] * (ctx.samples - 1), settings["steps"], seconds)
    starts = plain_samples(ctx, t, unit) if row == "accentuation" else [None] * ctx.samples

    def score(crops: torch.Tensor) -> torch.Tensor:
        return unit_score(ctx.net, unit, crops).mean()

    tic, images = time.perf_counter(), []
    folder = (
        peers.spectrum_folder(ctx.folder, peers.maco_spectrum(ctx.pool)) if row == "maco" else contextlib.nullcontext()
    )
    with folder, contextlib.redirect_stderr(io.StringIO()):  # Horama's progress bars
        for seed, start in zip(seeds, starts, strict=True):
            images.append(peers.horama_run(row, score, seed, settings, ctx.size, device, start))
    seconds = (time.perf_counter() - tic) / ctx.samples
    return Made(to_uint8(torch.stack(images)), list(seeds), settings["steps"] * settings["crops"], seconds)


def run_exemplars(ctx: Context, t: int) -> Made:
    """The ``samples`` pool images with the highest value of unit t; the pool's evaluations and seconds."""
    order = np.argsort(-ctx.pool_values[t], kind="stable")[: ctx.samples]
    return Made(ctx.pool[order], [None] * len(order), len(ctx.pool), ctx.pool_seconds, {"pool_index": order.tolist()})


def score_unit(ctx: Context, t: int, unit: Unit, made: Made, held_mean: float, kind: str, attribute: str | None):
    """Per image of ``made``: the unit's value, probability, gain, the oracle's reading and the verdicts."""
    values, probabilities = measure(ctx.net, [unit], made.images)
    readings = scene_kind(kind).read_batch(made.images)
    best = float(ctx.pool_values[t].max())
    samples = []
    for k, reading in enumerate(readings):
        value, probability = float(values[0, k]), float(probabilities[0, k])
        entry = {"unit": unit.name, "kind": unit.kind, "sample": k, "seed": made.seeds[k], "value": value}
        if unit.kind == "class":
            entry["probability"] = probability
            entry["reached"] = probability > CLASS_BAR
        else:
            entry["gain"] = value / held_mean if held_mean > 0 else float("nan")
            entry["reached"] = held_mean > 0 and value >= NEURON_BAR * held_mean
        entry["at_least_best_exemplar"] = value >= best - EXEMPLAR_TOLERANCE * max(1.0, abs(best))
        entry.update(valid=reading.valid, reason=reading.reason, reading=reading.attributes())
        if unit.kind == "class" and attribute is not None:
            entry["shows_class"] = bool(reading.valid and getattr(reading, attribute) == unit.name)
        samples.append(entry)
    return samples


def summarise(samples: list[dict], kind: str, evaluations: int, seconds: list[float]) -> dict | None:
    """One row's numbers over the units of one kind: the rates with 95% Wilson intervals, medians, cost."""
    chosen = [s for s in samples if s["kind"] == kind]
    if not chosen:
        return None
    n = len(chosen)
    entry = {
        "n": n,
        "reached": proportion(sum(s["reached"] for s in chosen), n),
        "at_least_best_exemplar": proportion(sum(s["at_least_best_exemplar"] for s in chosen), n),
        "valid": proportion(sum(s["valid"] for s in chosen), n),
        "value": {
            "median": float(np.median([s["value"] for s in chosen])),
            "mean": float(np.mean([s["value"] for s in chosen])),
        },
    }
    if kind == "class":
        entry["probability"] = {"median": float(np.median([s["probability"] for s in chosen]))}
        if all("shows_class" in s for s in chosen):
            entry["shows_class"] = proportion(sum(s["shows_class"] for s in chosen), n)
    else:
        entry["gain"] = {"median": float(np.nanmedian([s["gain"] for s in chosen]))}
    entry["network_evaluations_per_image"] = evaluations
    entry["wall_seconds_per_image"] = float(np.mean(seconds))  # NaN for the unguided row: part of featscope's
    return entry


def row_settings(row: str, ctx: Context) -> dict:
    """What results.json records about how a row made its images."""
    if row == "featscope":
        prompt = "DiG-IN's choice per unit (investigate.neuron_prompts)" if ctx.prompt == CHOSEN else ctx.prompt
        return {"core": "featscope.investigate.cores.neuron", "prompt": prompt, **asdict(ctx.config)}
    if row == UNGUIDED:
        return {"what": "featscope's plain sample: iteration 0 of the same run, before any optimisation"}
    if row == "exemplars":
        return {"pool": f"the tuning split ({len(ctx.pool)} images)", "kept": f"the {ctx.samples} highest values"}
    settings = peer_settings(row, ctx.budget)
    settings["box_size"] = list(settings["box_size"]) if "box_size" in settings else None
    settings = {k: v for k, v in settings.items() if v is not None}
    if row == "maco":
        settings["spectrum"] = f"mean decorrelated magnitude spectrum of the tuning split ({len(ctx.pool)} images)"
    if row == "accentuation":
        settings["seed_image"] = "featscope's plain sample of the same seed (the unguided row's image)"
    if row == "lucent":
        settings["objective"] = "objectives.channel on each batch element, summed"
    return settings


def run_visualization_bench(
    out: str | Path,
    *,
    net: str = "world:shape-net@fc",
    classes: Sequence[int | str] | None = None,
    channels: Sequence[int] = (0, 1, 2, 3),
    samples: int = 2,
    compare: Sequence[str] = ROWS,
    seed: int = 0,
    backbone: str = "world:ddpm",
    prompt: str = "",
    device: str = "auto",
    quiet: bool = False,
    overwrite: bool = False,
    **settings,
) -> dict:
    """Visualise each class logit (``classes``; None: all the network's) and each neuron (``channels`` of the
    input of the last linear layer) ``samples`` times with every row of ``compare`` (:data:`ROWS`), score every
    image the same way and write ``out/`` (results.json, results.md, grid.png, images/). Sample k of unit t (the
    classes first, then the neurons) uses seed ``seed + t * samples + k``. ``prompt``: featscope's prompt, ``""``
    (none) or ``"chosen"`` (DiG-IN's word per unit, as ``investigate neuron`` chooses it). ``settings`` override
    featscope's end-to-end settings (the backbone's neuron defaults, what ``featscope investigate neuron`` runs); the
    peers spend about featscope's network evaluations per image. Returns what results.json holds."""
    out = Path(out)
    check_out(out, overwrite)
    if samples < 1:
        raise FeatscopeError(f"samples must be at least 1, not {samples}")
    rows, notes = check_rows(list(compare))
    config = endtoend_defaults(backbone, "neuron").with_overrides(**settings)
    config.validate()
    torch_device = resolve_device(device)
    network = load_extractor(net, device=torch_device)
    units = units_of(network, classes, channels)
    if not units:
        raise FeatscopeError("no class and no neuron to visualise; give --classes or --channels")
    for note in notes:  # after the user's mistakes, so that those stay one line
        print(note, file=sys.stderr)
    size = int((network.input_size or (32, 32))[0])
    model = load_backbone(backbone, device=torch_device) if {"featscope", "accentuation"} & set(rows) else None
    kind = backbone_kind(model) if model is not None else getattr(kind_of_size(size, size), "name", DEFAULT_KIND)
    pool, _ = split_images(SPLIT_STREAM - len(EXCLUDED_BY_KIND[kind]["tuning"]), "tuning", kind=kind)
    measure(network, units, pool[:1])  # warm the network so the timing is the pool's
    tic = time.perf_counter()
    pool_values, _ = measure(network, units, pool)
    pool_seconds = time.perf_counter() - tic
    held_out, _ = split_images(HELD_OUT_IMAGES, "test", kind=kind)
    held_means = measure(network, units, held_out)[0].mean(1)
    ctx = Context(network, units, samples, seed, config, model, size, pool, pool_values, pool_seconds,
                  out / "maco", {}, prompt)  # fmt: skip
    labels = [u.name for u in units if u.kind == "class"]
    attribute = class_attribute(kind, labels)
    made: dict[str, list[Made]] = {}
    order = [r for row in rows for r in ((row, UNGUIDED) if row == "featscope" else (row,))]
    with tqdm(total=len(rows) * len(units), disable=quiet, desc="visualize", unit="unit", dynamic_ncols=True) as bar:
        for row in rows:
            for t, unit in enumerate(units):
                bar.set_postfix(row=row, unit=unit.name)
                if row == "featscope":
                    best, plain = run_featscope(ctx, t, unit)
                    made.setdefault(row, []).append(best)
                    made.setdefault(UNGUIDED, []).append(plain)
                elif row == "exemplars":
                    made.setdefault(row, []).append(run_exemplars(ctx, t))
                else:
                    made.setdefault(row, []).append(run_peer(ctx, row, t, unit))
                bar.update(1)
    report = {
        "config": {
            "net": net,
            "backbone": backbone,
            "kind": kind,
            "classes": labels,
            "channels": [u.channel for u in units if u.kind == "neuron"],
            "samples": samples,
            "prompt": prompt,
            "compare": list(compare),
            "seeds": "seed + unit index * samples + sample",
            "seed": seed,
            "settings": settings,
            "device": str(torch_device),
            "featscope": __version__,
            "torch": str(torch.__version__),
            "machine": machine(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        "skipped": notes,
        "bars": {
            "class": f"probability > {CLASS_BAR}",
            "neuron": f"activation >= {NEURON_BAR:g}x the channel's mean on the test split's first "
            f"{HELD_OUT_IMAGES} images",
        },
        "class_attribute": attribute,
        "pool": {"split": "tuning", "images": len(pool), "seconds": pool_seconds},
        "peer_budget": ctx.budget,
        "units": [
            {**asdict(u), "held_out_mean": float(m), "pool_max": float(v.max()), "pool_mean": float(v.mean())}
            for u, m, v in zip(units, held_means, pool_values, strict=True)
        ],
        "rows": [],
    }
    for row in order:
        samples_of_row = []
        for t, (unit, m) in enumerate(zip(units, made[row], strict=True)):
            scored = score_unit(ctx, t, unit, m, float(held_means[t]), kind, attribute)
            for image in scored:  # the row's own per-image record (featscope's iterations, the pool indices)
                image.update({key: value[image["sample"]] for key, value in (m.extra or {}).items()})
            samples_of_row += scored
        evaluations = made[row][0].evaluations
        entry = {"label": row, "images": f"images/{row}", "settings": row_settings(row, ctx)}
        for unit_kind, key in (("class", "classes"), ("neuron", "neurons")):
            seconds = [m.seconds for u, m in zip(units, made[row], strict=True) if u.kind == unit_kind]
            entry[key] = summarise(samples_of_row, unit_kind, evaluations, seconds)
        entry["samples"] = samples_of_row
        report["rows"].append(entry)
    write_outputs(out, report, units, made, order)
    return report


def write_outputs(out: Path, report: dict, units: list[Unit], made: dict[str, list[Made]], order: list[str]) -> None:
    """Images, the grid and results.md, then results.json last: its presence marks a whole result."""
    if (out / RESULTS).exists():  # overwriting a result: the old one goes first, whole
        (out / RESULTS).unlink()
        shutil.rmtree(out / "images", ignore_errors=True)
    for row in order:
        for unit, m in zip(units, made[row], strict=True):
            for k, image in enumerate(m.images):
                save_image(image, out / "images" / row / f"{unit.slug}_{k}.png")
    strips = [(row, [m.images[0] for m in made[row]]) for row in order]
    atomic_write_bytes(out / "grid.png", unit_grid_figure([u.name for u in units], strips))
    atomic_write_text(out / "results.md", visualization_markdown(report))
    atomic_write_json(out / RESULTS, report)


def _cell(entry: dict, key: str) -> str:
    value = entry.get(key)
    return f"{format_proportion(value)} ({value['successes']}/{value['total']})" if value else "-"


def _seconds(value: float | None) -> str:
    return "in featscope's" if value is None or np.isnan(value) else f"{value:.3g}"


def visualization_markdown(report: dict) -> str:
    """results.md: the run in a paragraph, then a table for the class logits and one for the neurons."""
    config = report["config"]
    lines = [
        "# featscope bench visualize",
        "",
        f"{config['net']}, backbone {config['backbone']} ({config['kind']} scenes), {config['samples']} image(s) per "
        f"unit, featscope {config['featscope']}, torch {config['torch']}, {config['device']}. Rates with 95% Wilson "
        "intervals over images (n). Exemplar pool: the tuning split "
        f"({report['pool']['images']} images); peers at about {report['peer_budget']} network evaluations per "
        "image (featscope's).",
        "",
        *(f"{note}." for note in report["skipped"]),
    ]
    tables = (
        ("classes", "Class logits", f"reached: {report['bars']['class']}", ("shows class", "shows_class")),
        ("neurons", "Neurons (input of the last linear layer)", f"reached: {report['bars']['neuron']}", None),
    )
    for key, title, bar, extra in tables:
        rows = [row for row in report["rows"] if row[key] is not None]
        if not rows:
            continue
        value = "median logit" if key == "classes" else "median activation"
        columns = ["row", "n", "reached", ">= best exemplar", "valid", *([extra[0]] if extra else []), value,
                   "median p(class)" if key == "classes" else "median gain", "evals/image", "s/image"]  # fmt: skip
        lines += ["", f"## {title}", "", f"{bar}; >= best exemplar: the value is at least the pool's highest.", "",
                  "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]  # fmt: skip
        for row in rows:
            e = row[key]
            second = e["probability"]["median"] if key == "classes" else e["gain"]["median"]
            cells = [row["label"], str(e["n"]), _cell(e, "reached"), _cell(e, "at_least_best_exemplar"),
                     _cell(e, "valid"), *([_cell(e, extra[1])] if extra else []), f"{e['value']['median']:.3g}",
                     f"{second:.3g}", str(e["network_evaluations_per_image"]),
                     _seconds(e["wall_seconds_per_image"])]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Rows", ""]
    for row in report["rows"]:
        settings = row["settings"]
        text = settings.get("what") or ", ".join(f"{k} {v if v != '' else chr(34) * 2}" for k, v in settings.items())
        lines.append(f"- {row['label']}: {text}")
    return "\n".join(lines) + "\n"
