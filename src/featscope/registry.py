"""Spec families from plugins: ``FAMILY:NAME`` backbones and extractors that featscope does not build itself.

A plugin is a module that calls ``register_backbone`` / ``register_extractor`` (and, for the text encoders of
``pixel:`` folders, ``register_text_encoder``; for readers of decoded images, ``register_reader``) when it is
imported. featscope's own plugins are listed in
``BUILTIN_PLUGINS``; another package declares its plugin module as an entry point::

    [project.entry-points."featscope.plugins"]
    mynets = "mypackage.featscope_plugin"

Plugins are imported the first time a spec needs them (a family that featscope does not know by itself), so
``import featscope`` and ``featscope --help`` import none. A loader is a callable or a ``"module.path:function"``
string, imported when the family's first model is loaded (so that registering stays cheap). Built-in families
(``sd:``, ``pixel:``, ``clip:``, ``open_clip:``, ``torchvision:``, ``timm:``) win over a plugin's family of the
same name.
"""

from __future__ import annotations

import importlib
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from featscope.errors import FeatscopeError

ENTRY_POINT_GROUP = "featscope.plugins"
BUILTIN_PLUGINS = ("featscope.world.plugin",)
BUILTIN_FAMILIES = ("sd", "sdxl", "sd3", "flux", "pixel")  # featscope's own backbone families win over plugins
FAMILY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
Loader = Callable[..., Any] | str  # a callable or "module.path:function"


@dataclass(frozen=True)
class Family:
    """A registered spec family: ``loader`` builds its models, ``usage`` shows its spec form in error messages,
    ``names`` are its known model names (None: any name), checked before anything is loaded."""

    name: str
    loader: Loader
    usage: str
    names: tuple[str, ...] | None = None
    settings: Mapping[str, Mapping[str, Any]] | None = None
    settings_for: tuple[str, ...] | None = None  # the names ``settings`` apply to (None: all)

    def load(self, *args: Any, **kwargs: Any) -> Any:
        """Call the loader (importing it first when it is given as ``"module.path:function"``)."""
        return resolve(self.loader)(*args, **kwargs)


_backbones: dict[str, Family] = {}
_extractors: dict[str, Family] = {}
_text_encoders: list[Loader] = []
_readers: dict[str, Loader] = {}
_loaded = False


def register_backbone(
    family: str,
    loader: Loader,
    usage: str,
    names: Iterable[str] | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    settings_for: Iterable[str] | None = None,
) -> None:
    """Make ``family:NAME`` a backbone spec: ``loader(NAME, *, spec, dtype)`` returns a ``Backbone`` (on CPU).

    ``usage`` (e.g. ``"world:ddpm (the embedded world model)"``) is listed by unknown-family errors; with
    ``names``, any other NAME is refused (with a did-you-mean) without calling ``loader``. ``settings`` are the
    family's own solver defaults by solver (``{"endtoend": {"latent_lr": 0.01}}``; see :func:`backbone_settings`),
    for the NAMEs in ``settings_for`` only when it is given (the others run the published settings).
    """
    _backbones[_checked(family)] = Family(
        family,
        loader,
        usage,
        None if names is None else tuple(names),
        None if settings is None else dict(settings),
        None if settings_for is None else tuple(settings_for),
    )


def register_extractor(family: str, loader: Loader, usage: str, names: Iterable[str] | None = None) -> None:
    """Make ``family:NAME[@LAYER]`` an extractor spec: ``loader(spec, weights, pretrained)`` returns an
    ``Extractor`` for the parsed ``Spec`` (``weights``: a local weights file or None; ``pretrained=False``:
    random weights will do). ``usage`` and ``names`` as for ``register_backbone``."""
    _extractors[_checked(family)] = Family(family, loader, usage, None if names is None else tuple(names))


def register_text_encoder(loader: Loader) -> None:
    """The reader of a ``pixel:`` folder's ``text_encoder/``: ``loader(folder, dtype)`` returns a module that maps
    a list of captions to embeddings (B, L, D) and has ``dim`` (D). The last one registered is used."""
    _text_encoders.append(loader)


def register_reader(name: str, loader: Loader) -> None:
    """A reader of results: ``loader(targets, results)`` takes two (N, 3, H, W) image batches in [0, 1] and
    returns, per pair, a dict of what it reads (``"summary"``: one line for people) or None where it cannot read
    the target. Decoding records every reader's readings in ``metrics.json`` and prints the summaries."""
    _readers[_checked(name)] = loader


def readers() -> dict[str, Callable[..., Any]]:
    """The registered readers by name, as callables (imports the plugins on first use)."""
    load_plugins()
    return {name: resolve(loader) for name, loader in _readers.items()}


def backbone_families() -> dict[str, Family]:
    """The plugins' backbone families by name (imports the plugins on first use)."""
    load_plugins()
    return dict(_backbones)


def extractor_families() -> dict[str, Family]:
    """The plugins' extractor families by name (imports the plugins on first use)."""
    load_plugins()
    return dict(_extractors)


def backbone_settings(spec: str, solver: str) -> dict[str, Any]:
    """The defaults that the backbone family of ``spec`` registered for ``solver`` (e.g. ``"endtoend"``); empty
    for the built-in families (``sd:`` ...: the published settings) and for a family that registered none."""
    family, _, name = spec.partition(":")
    if family in BUILTIN_FAMILIES:
        return {}
    entry = backbone_families().get(family)
    if entry is None or (entry.settings_for is not None and name not in entry.settings_for):
        return {}
    return dict((entry.settings or {}).get(solver, {}))


def text_encoder_loader() -> Callable[..., Any] | None:
    """The registered reader of ``text_encoder/`` folders, None if no plugin has one."""
    load_plugins()
    return resolve(_text_encoders[-1]) if _text_encoders else None


def resolve(loader: Loader) -> Callable[..., Any]:
    """A loader as a callable: ``"module.path:function"`` is imported."""
    if callable(loader):
        return loader
    module, _, name = loader.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise FeatscopeError(f"cannot import the plugin loader {loader!r} ({type(error).__name__}: {error})") from error


def load_plugins() -> None:
    """Import the built-in plugins, then the ``featscope.plugins`` entry points (once per process).

    A third-party plugin that fails to import is skipped with a warning, so it cannot break other specs.
    """
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_PLUGINS:
        importlib.import_module(module)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except Exception as error:  # a broken third-party package
            warnings.warn(
                f"featscope plugin {entry.name!r} ({entry.value}) failed to import: {type(error).__name__}: {error}",
                stacklevel=2,
            )


def _checked(family: str) -> str:
    if not FAMILY_NAME.fullmatch(family):
        raise ValueError(f"bad family name {family!r}: use letters, digits, '_' and '-', starting with a letter")
    return family
