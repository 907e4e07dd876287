"""``featscope bench``: how well do decoded images match their targets, on the embedded world?

Targets are fresh world images with known attributes; each is decoded from its feature with every
extractor and preset (and an unguided baseline), then scored by feature distance and by the world
oracle's reading of the decoded image. See ``run_bench``. ``run_visualization_bench`` visualises class logits and
neurons with featscope and with the peers and scores every image the same way (``featscope bench visualize``).
"""

from featscope.bench.run import run_bench
from featscope.bench.stats import median_pair_distance, wilson_interval
from featscope.bench.visualization import run_visualization_bench

__all__ = ["median_pair_distance", "run_bench", "run_visualization_bench", "wilson_interval"]
