"""A tiny word-level text encoder for world captions: the world's stand-in for CLIP's text tower."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from featscope.errors import FeatscopeError
from featscope.world.render import ATTRIBUTES

SPECIAL = ("<pad>", "<bos>")
VOCABULARY: tuple[str, ...] = SPECIAL + tuple(w for values in ATTRIBUTES.values() for w in values) + ("on",)
MAX_LENGTH = 8


def tokenize(captions: list[str]) -> torch.Tensor:
    """Caption strings to token ids (B, MAX_LENGTH): ``<bos>`` then words, padded."""
    index = {w: i for i, w in enumerate(VOCABULARY)}
    rows = []
    for caption in captions:
        words = caption.lower().replace(",", " ").split()
        unknown = [w for w in words if w not in index]
        if unknown:
            raise FeatscopeError(
                f"world captions use attribute words only; unknown {unknown} in {caption!r}; "
                f"known words: {', '.join(VOCABULARY[2:])}"
            )
        if len(words) > MAX_LENGTH - 1:
            raise FeatscopeError(f"world caption {caption!r} is longer than {MAX_LENGTH - 1} words; shorten it")
        ids = [1] + [index[w] for w in words]
        rows.append(ids + [0] * (MAX_LENGTH - len(ids)))
    return torch.tensor(rows, dtype=torch.long)


class WorldTextEncoder(nn.Module):
    """Token embedding, position embedding and one transformer layer: (B, L) ids -> (B, L, dim)."""

    def __init__(self, dim: int = 64, heads: int = 4, layers: int = 1) -> None:
        super().__init__()
        self.config = {"dim": dim, "heads": heads, "layers": layers}
        self.tokens = nn.Embedding(len(VOCABULARY), dim)
        self.positions = nn.Parameter(torch.zeros(MAX_LENGTH, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.positions, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.encoder(self.tokens(ids) + self.positions[: ids.shape[1]]))

    def encode(self, captions: list[str]) -> torch.Tensor:
        """Caption strings to embeddings (B, MAX_LENGTH, dim) on this module's device."""
        return self(tokenize(captions).to(self.positions.device))

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.config))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / "model.safetensors"))

    @classmethod
    def load(cls, folder: str | Path) -> WorldTextEncoder:
        folder = Path(folder)
        model = cls(**json.loads((folder / "config.json").read_text()))
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        return model.eval()


class WorldPromptEncoder(nn.Module):
    """Captions -> ``WorldTextEncoder`` embeddings (B, L, D): a backbone's prompt encoder; ``dim`` is D.
    ``free_text`` is False: captions use attribute words only (``Backbone.free_text_prompts`` reads it)."""

    free_text = False

    def __init__(self, encoder: WorldTextEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.dim: int = encoder.config["dim"]

    def forward(self, prompts: list[str]) -> torch.Tensor:
        return self.encoder.encode(list(prompts))

    def word_positions(self, prompt: str, words: list[str]) -> list[int]:
        """The token positions of ``words`` in ``prompt`` (word k of the caption is token k + 1, after ``<bos>``):
        where cross-attention masks and word swaps find a class word."""
        caption = prompt.lower().replace(",", " ").split()
        return [k + 1 for k, w in enumerate(caption) if w in words]
