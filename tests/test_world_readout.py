"""Reading a decoded image against its target with the world's oracle: kept and changed attributes."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from featscope.images import to_tensor
from featscope.world.readout import compare, describe
from featscope.world.render import generate, render


def test_a_colour_change_is_the_one_change_and_a_non_world_target_gets_no_reading():
    images, records = generate(1, seed=5, shape="star", color="yellow")
    recoloured = render(dataclasses.replace(records[0], color="magenta"))
    target, decoded = to_tensor(images), to_tensor(np.stack([recoloured]))
    (reading,) = compare(target, decoded)
    assert reading["changed"] == {"color": ["yellow", "magenta"]}
    assert reading["kept"] == ["shape", "size", "position", "background"]
    assert describe(reading) == "kept: shape, size, position, background | changed: color yellow->magenta"
    noise = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert compare(noise, decoded) == [None] and describe(None) == ""
    (unreadable,) = compare(target, noise)
    assert not unreadable["valid"] and unreadable["kept"] == [] and "no single clear object" in describe(unreadable)
