"""The network under study: specs, loading, layers and differentiable preprocessing."""

from featscope.extractors.base import Extractor, straight_through_round
from featscope.extractors.spec import Spec, parse_spec
from featscope.extractors.zoo import list_layers, load_extractor

__all__ = ["Extractor", "Spec", "list_layers", "load_extractor", "parse_spec", "straight_through_round"]
