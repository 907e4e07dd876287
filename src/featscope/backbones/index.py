"""Which featscope family loads a diffusers folder, from the pipeline class in its model_index.json."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import try_to_load_from_cache

from featscope.errors import FeatscopeError

# model_index.json's pipeline class name (its prefix) -> the featscope family that loads it; longest prefix wins
PIPELINE_FAMILIES = {
    "StableDiffusionXL": "sdxl",
    "StableDiffusion3": "sd3",
    "StableDiffusion": "sd",
    "Flux": "flux",
}


def family_of(index: Path) -> tuple[str, str | None]:
    """(pipeline class named by a model_index.json, the featscope family of it); ('', None) if unnamed."""
    try:
        name = str(json.loads(index.read_text()).get("_class_name", ""))
    except (OSError, ValueError, AttributeError):
        return "", None
    for prefix in sorted(PIPELINE_FAMILIES, key=len, reverse=True):
        if name.startswith(prefix):
            return name, PIPELINE_FAMILIES[prefix]
    return name, None


def _index_of(source: str) -> Path | None:
    """The model_index.json of a folder, or of a hub id's cached snapshot; None where there is none."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path / "model_index.json" if (path / "model_index.json").is_file() else None
    try:
        cached = try_to_load_from_cache(source, "model_index.json")
    except ValueError:  # not a hub id: the loader says so
        return None
    return Path(cached) if isinstance(cached, str) else None


def check_family(source: str, family: str) -> None:
    """Raise a one-line error when the folder or cached hub model ``source`` is a pipeline of another family,
    saying which spec loads it."""
    index = _index_of(source)
    name, found = family_of(index) if index is not None else ("", None)
    if found is not None and found != family:
        raise FeatscopeError(f"{source} holds a {name}, not a {family}: model; load it as {found}:{source}")
