"""Which featscope family loads a diffusers folder, from the pipeline class in its model_index.json."""

from __future__ import annotations

import json
from pathlib import Path

from featscope.errors import FeatscopeError

# model_index.json's pipeline class name (its prefix) -> the featscope family that loads it; longest prefix wins
PIPELINE_FAMILIES = {
    "StableDiffusionXL": "sdxl",
    "StableDiffusion3": "sd3",
    "StableDiffusion": "sd",
    "Flux": "flux",
}


def family_of(folder: Path) -> tuple[str, str | None]:
    """(pipeline class named by the folder's model_index.json, the featscope family of it); ('', None) if unnamed."""
    index = folder / "model_index.json"
    if not index.is_file():
        return "", None
    try:
        name = str(json.loads(index.read_text()).get("_class_name", ""))
    except (OSError, ValueError):
        return "", None
    for prefix in sorted(PIPELINE_FAMILIES, key=len, reverse=True):
        if name.startswith(prefix):
            return name, PIPELINE_FAMILIES[prefix]
    return name, None


def check_family(folder: Path, family: str) -> None:
    """Raise a one-line error when ``folder`` holds a pipeline of another family (and say which spec loads it)."""
    name, found = family_of(folder)
    if found is not None and found != family:
        raise FeatscopeError(f"{folder} holds a {name}, not a {family}: model; load it as {found}:{folder}")
