"""A caption's word swap and its token map (prompt-to-prompt's word-swap mapper): what a word-swap counterfactual
and a counterfactual's word-swap start edit."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from featscope.errors import FeatscopeError
from featscope.investigate.masks import word_tokens

if TYPE_CHECKING:
    from featscope.backbones.base import Backbone


def _whole_word(word: str) -> re.Pattern:
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(word)}(?![A-Za-z0-9])", re.IGNORECASE)


def has_word(prompt: str, word: str) -> bool:
    """Whether ``word`` is a whole word of ``prompt`` (any case)."""
    return _whole_word(word).search(prompt) is not None


def swap_word(prompt: str, word: str, new: str) -> str:
    """``prompt`` with every whole-word occurrence of ``word`` (any case) replaced by ``new``."""
    if not has_word(prompt, word):
        raise FeatscopeError(f"the word {word!r} is not in the caption {prompt!r}; give a caption with it (--prompt)")
    return _whole_word(word).sub(new, prompt)


def _runs(positions: Sequence[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for p in positions:
        if runs and p == runs[-1][-1] + 1:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def identity_mapper(backbone: Backbone, caption: str) -> torch.Tensor:
    """(L, L) identity: a caption's own token positions, for re-injecting its attention into itself."""
    return torch.eye(backbone.encode_prompt([caption]).shape[1] - backbone.extra_condition_rows)


def token_mapper(backbone: Backbone, source: str, edited: str, word: str, new: str) -> torch.Tensor:
    """(L, L) map of the source caption's token positions to the edited caption's, prompt-to-prompt's word-swap
    mapper: tokens outside the swapped word map one to one in order; where the old and new word have as many
    tokens they map one to one too, else each old token gives 1/len(new) to each new token. Every row sums to
    1, so attention rows mapped through it still do: source positions past the edited caption's end go to its
    last position, and edited positions past the source's end share the last source position."""
    length = backbone.encode_prompt([source]).shape[1] - backbone.extra_condition_rows
    old, fresh = _runs(word_tokens(backbone, source, word)), _runs(word_tokens(backbone, edited, new))
    if len(old) != len(fresh):  # the new word was in the caption already
        raise FeatscopeError(f"cannot align {source!r} with {edited!r}: {new!r} is in the caption already")
    starts = {o[0]: (o, f) for o, f in zip(old, fresh, strict=True)}
    mapper = torch.zeros(length, length)
    i = j = 0
    while i < length and j < length:
        if i in starts and starts[i][1][0] == j:
            o, f = starts[i]
            f = [k for k in f if k < length]
            if len(o) == len(f):
                mapper[o, f] = 1.0
            else:
                mapper[o[0] : o[-1] + 1, f] = 1 / len(f)
            i, j = o[-1] + 1, f[-1] + 1
        else:
            mapper[i, j] = 1.0
            i, j = i + 1, j + 1
    if i < length:
        mapper[i:, length - 1] = 1.0
    elif j < length:
        mapper[length - 1, j - 1 :] = 1 / (length - j + 1)
    return mapper
