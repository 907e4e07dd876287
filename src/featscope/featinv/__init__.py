"""Feature-map inversion with a ControlNet (FeatInv, arXiv 2505.21032): train a ControlNet that turns a
network's spatial feature maps into images, then reconstruct, evaluate and steer feature maps.

    from featscope import featinv
    model = featinv.build("world:ddpm", "world:shape-net@block2", adapter_width=64)
    featinv.train(model, "runs/fi", world=2000, config=featinv.TrainConfig(steps=500, lr=1e-4))
    model = featinv.load_model("runs/fi/model")
    images = featinv.reconstruct(model, featinv.encode(model, originals)).images
    summary = featinv.evaluate(model, originals).summary
    preset = featinv.PRESETS["published"]  # miniSD + ConvNeXt-B stages.3 @288px, and the released weights:
    model = featinv.build(preset.backbone, preset.extractor)
    model = featinv.load_published(model, "control_featinv_convnext_fin.ckpt")

The cores (reconstruct, steer, evaluate) take loaded models and tensors and return result dataclasses;
run_reconstruct, run_steer and run_evaluate (the CLI's) load, call them and write a run folder.
"""

from featscope._lazy import exported_names, lazy_getattr

_EXPORTS = {  # module -> the names it exports, imported on first access
    "featscope.featinv.model": ("DEFAULT_PROMPT", "FeatInvConfig", "FeatInvModel", "build", "load_model"),
    "featscope.featinv.steering": ("Edit", "SteerResult", "make_edit", "steer"),
    "featscope.featinv.evaluation": ("EvaluationResult", "evaluate"),
    "featscope.featinv.reconstruction": ("ReconstructionResult", "encode", "reconstruct"),
    "featscope.featinv.config": ("PRESETS", "SampleSettings", "TrainConfig"),
    "featscope.featinv.published": ("load_published",),
    "featscope.featinv.world": ("embedded_folder", "export_model", "train_world"),
    "featscope.featinv.jobs": ("run_evaluate", "run_reconstruct", "run_steer"),
    "featscope.featinv.training": ("train",),
}
__all__ = exported_names(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
