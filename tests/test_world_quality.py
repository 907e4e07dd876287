"""The world model's quality measurement counts what it says it counts."""

from __future__ import annotations

import pytest

from featscope.backbones import load_backbone
from featscope.world.quality import evaluate_world_model


def test_quality_record_counts_unconditional_and_captioned_samples_separately():
    backbone = load_backbone("world:ddpm")
    record = evaluate_world_model(backbone, n=3, n_captioned=5, num_steps=2, batch=2)
    assert record["samples"] == 3 and record["captioned_samples"] == 5
    valid = round(record["valid_rate"] * 3)
    for name, freq in record["frequencies"].items():
        assert sum(freq.values()) == pytest.approx(1.0 if valid else 0.0), name
    hits = record["caption_match_per_attribute"]["shape"] * 5
    assert hits == pytest.approx(round(hits))  # a share of five captioned samples
    unconditional_only = evaluate_world_model(backbone, n=2, n_captioned=0, num_steps=2)
    assert unconditional_only["caption_match_rate"] is None and unconditional_only["samples"] == 2
