"""Feature-map inversion with a ControlNet (FeatInv, arXiv 2505.21032): train a ControlNet that turns a
network's spatial feature maps into images, then reconstruct, evaluate and steer feature maps.

    from featscope import featinv
    model = featinv.build("world:ddpm", "world:shape-net@block2", adapter_width=64)
    featinv.train(model, "runs/fi", world=2000, config=featinv.TrainConfig(steps=500, lr=1e-4))
    model = featinv.load_model("runs/fi/model")
    images = featinv.reconstruct(model, featinv.encode(model, originals))
    metrics = featinv.evaluate(model, originals)
"""

from featscope.featinv.config import SampleSettings, TrainConfig
from featscope.featinv.evaluate import evaluate
from featscope.featinv.jobs import run_evaluate, run_reconstruct, run_steer
from featscope.featinv.model import DEFAULT_PROMPT, FeatInvConfig, FeatInvModel, build, load_model
from featscope.featinv.reconstruct import encode, reconstruct
from featscope.featinv.steer import Edit, make_edit, steer
from featscope.featinv.train import train
from featscope.featinv.world import embedded_folder, export_model, train_world

__all__ = [
    "DEFAULT_PROMPT",
    "Edit",
    "FeatInvConfig",
    "FeatInvModel",
    "SampleSettings",
    "TrainConfig",
    "build",
    "embedded_folder",
    "encode",
    "evaluate",
    "export_model",
    "load_model",
    "make_edit",
    "reconstruct",
    "run_evaluate",
    "run_reconstruct",
    "run_steer",
    "steer",
    "train",
    "train_world",
]
