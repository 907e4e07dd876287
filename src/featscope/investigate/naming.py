"""A channel's top images in a dataset and its name from them: their most frequent class, or the most frequent
content word of their captions by an image-to-text model (``--namer vlm:DIR``)."""

from __future__ import annotations

import re
from collections import Counter

import torch

from featscope.datasets import ClassFolderDataset
from featscope.investigate.common import load_start_image, save_strip
from featscope.objectives import activation, pick_channel
from featscope.runs import RunFolder

STOPWORDS = frozenset("a an and are at by for from image in is it its of on or photo photograph picture some that "
                      "the there this to with".split())  # fmt: skip


@torch.no_grad()
def dataset_activations(net, layer, inputs, channels, dataset: ClassFolderDataset, size, batch=32) -> torch.Tensor:
    """(N, C) activations of ``channels`` of ``layer`` over the ``dataset``'s images (``inputs``: the layer's
    input rather than its output)."""
    device = next(net.parameters()).device
    module, values = net.network, []
    for start in range(0, len(dataset), batch):
        images = torch.cat([load_start_image(it.path, size) for it in dataset.items[start : start + batch]])
        act = activation(module, net.preprocess(images.to(device)), layer, inputs).float()
        values.append(torch.stack([pick_channel(act, c) for c in channels], 1).cpu())
    return torch.cat(values)


def top_k(run: RunFolder, dataset: ClassFolderDataset, column: torch.Tensor, k: int, size, captioner,
          namer: str | None) -> dict:  # fmt: skip
    """top_k.png and top_k.json: the dataset images with the highest activations; their name and top value."""
    order = column.argsort(descending=True)[:k].tolist()
    top_images = torch.cat([load_start_image(dataset[i].path, size) for i in order])
    save_strip(top_images, [[f"{float(column[i]):.3g}"] for i in order], run.file("top_k.png"))
    tops = [{"file": str(dataset[i].path), "class": dataset[i].class_name, "activation": float(column[i])}
            for i in order]  # fmt: skip
    if captioner is not None:
        for top, caption in zip(tops, captioner.caption([dataset[i].path for i in order]), strict=True):
            top["caption"] = caption
        name = neuron_name([content_words(t["caption"]) for t in tops], namer)
    else:
        name = neuron_name([[t["class"]] for t in tops], "classes")
    run.write_json("top_k.json", tops)
    return {"name": name, "dataset_top_activation": float(column[order[0]])}


def content_words(caption: str) -> list[str]:
    """The words of a caption other than :data:`STOPWORDS`, sorted."""
    return sorted(set(re.findall(r"[a-z]+", caption.lower())) - STOPWORDS)


def neuron_name(names: list[list[str]], by: str) -> dict:
    """The most frequent name over the top images (each image counts a name once), with the five commonest."""
    counts = Counter(n for per_image in names for n in set(per_image)).most_common(5)
    return {"by": by, "name": counts[0][0] if counts else None, "counts": dict(counts)}
