"""Feature-map inversion with a ControlNet (FeatInv, arXiv 2505.21032): train a ControlNet that turns a
network's spatial feature maps into images, then reconstruct, evaluate and steer feature maps.

    from featscope import featinv
    model = featinv.build("world:ddpm", "world:shape-net@block2", adapter_width=64)
    featinv.train(model, "runs/fi", world=2000, config=featinv.TrainConfig(steps=500, lr=1e-4))
    model = featinv.load_model("runs/fi/model")
    images = featinv.reconstruct(model, featinv.encode(model, originals)).images
    summary = featinv.evaluate(model, originals).summary

The cores (reconstruct, steer, evaluate) take loaded models and tensors and return result dataclasses;
run_reconstruct, run_steer and run_evaluate (the CLI's) load, call them and write a run folder.
"""

from featscope._lazy import lazy_getattr

_EXPORTS = {
    "DEFAULT_PROMPT": "featscope.featinv.model",
    "Edit": "featscope.featinv.steering",
    "FeatInvConfig": "featscope.featinv.model",
    "EvaluationResult": "featscope.featinv.evaluation",
    "FeatInvModel": "featscope.featinv.model",
    "ReconstructionResult": "featscope.featinv.reconstruction",
    "SampleSettings": "featscope.featinv.config",
    "SteerResult": "featscope.featinv.steering",
    "TrainConfig": "featscope.featinv.config",
    "build": "featscope.featinv.model",
    "embedded_folder": "featscope.featinv.world",
    "encode": "featscope.featinv.reconstruction",
    "evaluate": "featscope.featinv.evaluation",
    "export_model": "featscope.featinv.world",
    "load_model": "featscope.featinv.model",
    "make_edit": "featscope.featinv.steering",
    "reconstruct": "featscope.featinv.reconstruction",
    "run_evaluate": "featscope.featinv.jobs",
    "run_reconstruct": "featscope.featinv.jobs",
    "run_steer": "featscope.featinv.jobs",
    "steer": "featscope.featinv.steering",
    "train": "featscope.featinv.training",
    "train_world": "featscope.featinv.world",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
