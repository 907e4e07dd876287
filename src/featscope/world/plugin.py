"""The embedded world as a featscope plugin (see ``featscope.registry``): the ``world:ddpm`` backbone, the
``world:shape-net``, ``world:color-net`` and ``world:spurious-net`` extractors, the word-level text encoder
of ``pixel:`` folders, and the oracle as a reader of decoded world images. Registering imports no model code:
the loaders in ``featscope.world.loaders`` are imported when a world spec is first loaded."""

from featscope.registry import register_backbone, register_extractor, register_reader, register_text_encoder
from featscope.world import BACKBONES, CLASSIFIER_TASKS

register_backbone("world", "featscope.world.loaders:load_world", "world:ddpm (the embedded world model)", BACKBONES)
register_extractor(
    "world", "featscope.world.loaders:build", "world:shape-net, world:color-net or world:spurious-net", CLASSIFIER_TASKS
)
register_text_encoder("featscope.world.loaders:load_text_encoder")
register_reader("world-oracle", "featscope.world.readout:read_pairs")
