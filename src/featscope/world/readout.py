"""What a decoded image kept of its target, read by the world's oracle (for targets that are world images)."""

from __future__ import annotations

import torch

from featscope.world.kinds import kind_of_size


def compare(targets: torch.Tensor, decoded: torch.Tensor) -> list[dict | None]:
    """Per (target, decoded) pair of (N, 3, S, S) images in [0, 1] (S = 32: shapes scenes, 64: patterned ones):
    the oracle's attributes of both, which attributes were kept and which changed; None where the target is not
    a readable world image."""
    kind = kind_of_size(*targets.shape[-2:])
    if tuple(targets.shape[-2:]) != tuple(decoded.shape[-2:]) or kind is None:
        return [None] * len(targets)
    read_batch, attributes = kind.read_batch, kind.attributes
    readings = []
    for target, result in zip(read_batch(targets), read_batch(decoded), strict=True):
        if not target.valid:
            readings.append(None)
            continue
        before = target.attributes()
        after = result.attributes() if result.valid else dict.fromkeys(attributes)
        readings.append(
            {
                "target": before,
                "decoded": after if result.valid else None,
                "valid": result.valid,
                "reason": result.reason,
                "kept": [name for name in attributes if after[name] == before[name]],
                "changed": {name: [before[name], after[name]] for name in attributes if after[name] != before[name]},
            }
        )
    return readings


def describe(reading: dict | None) -> str:
    """One line: ``kept: shape | changed: color yellow->magenta, size large->small``."""
    if reading is None:
        return ""
    if not reading["valid"]:
        return f"the oracle reads no single clear object in the decoded image ({reading['reason']})"
    kept = ", ".join(reading["kept"]) or "nothing"
    changed = ", ".join(f"{name} {a}->{b}" for name, (a, b) in reading["changed"].items())
    return f"kept: {kept}" + (f" | changed: {changed}" if changed else "")


def read_pairs(targets: torch.Tensor, results: torch.Tensor) -> list[dict | None]:
    """The registry's reader (``featscope.registry.register_reader``): :func:`compare` with a ``summary`` line."""
    return [None if r is None else {**r, "summary": describe(r)} for r in compare(targets, results)]
