"""Spec families: ``FAMILY:NAME`` backbones and extractors, featscope's own and the plugins'.

One table per kind holds every family, and ``load_backbone`` / ``load_extractor`` dispatch through it alone.
featscope's own families (``BUILTIN_BACKBONES``, ``BUILTIN_EXTRACTORS``) are registered below, when this module
is imported, through the same ``register_backbone`` / ``register_extractor`` that plugins call. A plugin is a
module that calls them (and, for the text encoders of ``pixel:`` folders, ``register_text_encoder``; for readers
of decoded images, ``register_reader``) when it is imported. featscope's own plugins are listed in
``BUILTIN_PLUGINS``; another package declares its plugin module as an entry point::

    [project.entry-points."featscope.plugins"]
    mynets = "mypackage.featscope_plugin"

Plugins are imported the first time a spec needs them (a family that featscope does not know by itself), so
``import featscope`` and ``featscope --help`` import none. A loader is a callable or a ``"module.path:function"``
string, imported when the family's first model is loaded (so that registering stays cheap: the built-in loaders'
modules, with diffusers, torchvision, timm or open_clip behind them, are imported on first use too). Built-in
families win over a plugin's family of the same name.
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
    takes_config: bool = False  # a backbone loader that takes ``config=`` (--backbone-config)
    builtin: bool = False  # featscope's own: a plugin's family of the same name is ignored
    listed: bool = True  # False: a spec form known by its shape (module.path:factory), not written FAMILY:NAME

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
    *,
    takes_config: bool = False,
    builtin: bool = False,
) -> None:
    """Make ``family:NAME`` a backbone spec: ``loader(NAME, *, spec, dtype)`` returns a ``Backbone`` (on CPU).

    ``usage`` (e.g. ``"world:ddpm (the embedded world model)"``) is listed by unknown-family errors; with
    ``names``, any other NAME is refused (with a did-you-mean) without calling ``loader``. ``settings`` are the
    family's own solver defaults by solver (``{"endtoend": {"latent_lr": 0.01}}``; see :func:`backbone_settings`),
    for the NAMEs in ``settings_for`` only when it is given (the others run the published settings).
    ``takes_config``: the loader also takes ``config=`` (a diffusers config for single-file checkpoints, the
    CLI's ``--backbone-config``). ``builtin`` marks featscope's own families (``BUILTIN_BACKBONES``).
    """
    _add(
        _backbones,
        Family(
            family,
            loader,
            usage,
            None if names is None else tuple(names),
            None if settings is None else dict(settings),
            None if settings_for is None else tuple(settings_for),
            takes_config=takes_config,
            builtin=builtin,
        ),
    )


def register_extractor(
    family: str,
    loader: Loader,
    usage: str,
    names: Iterable[str] | None = None,
    *,
    builtin: bool = False,
    listed: bool = True,
) -> None:
    """Make ``family:NAME[@LAYER]`` an extractor spec: ``loader(spec, weights, pretrained)`` returns an
    ``Extractor`` for the parsed ``Spec`` (``weights``: a local weights file or None; ``pretrained=False``:
    random weights will do). ``usage`` and ``names`` as for ``register_backbone``. ``builtin`` marks featscope's
    own families (``BUILTIN_EXTRACTORS``); ``listed=False`` their spec forms that are not written
    ``FAMILY:NAME`` (the user's factories, which ``parse_spec`` knows by their shape)."""
    _add(
        _extractors,
        Family(family, loader, usage, None if names is None else tuple(names), builtin=builtin, listed=listed),
    )


def _add(table: dict[str, Family], entry: Family) -> None:
    """Put ``entry`` in ``table``, unless a built-in family of that name is there (built-in families win)."""
    old = table.get(_checked(entry.name))
    if old is not None and old.builtin and not entry.builtin:
        warnings.warn(
            f"featscope's own {entry.name}: family wins over a plugin's registration of {entry.name!r}; it is ignored",
            stacklevel=3,
        )
        return
    table[entry.name] = entry


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
    """Every backbone family by name: featscope's own, then the plugins' (imports the plugins on first use)."""
    load_plugins()
    return dict(_backbones)


def extractor_families() -> dict[str, Family]:
    """Every extractor family by name: featscope's own (user factories among them, unlisted), then the plugins'
    (imports the plugins on first use)."""
    load_plugins()
    return dict(_extractors)


def backbone_family(name: str) -> Family | None:
    """The backbone family ``name``, None if there is none; a built-in one is found without importing plugins."""
    return _find(_backbones, name)


def extractor_family(name: str) -> Family | None:
    """The extractor family ``name``, None if there is none; a built-in one is found without importing plugins."""
    return _find(_extractors, name)


def builtin_backbones() -> dict[str, Family]:
    """featscope's own backbone families by name, in ``BUILTIN_BACKBONES`` order (no plugin is imported)."""
    return {name: entry for name, entry in _backbones.items() if entry.builtin}


def builtin_extractors() -> dict[str, Family]:
    """featscope's own extractor families by name, in ``BUILTIN_EXTRACTORS`` order (no plugin is imported)."""
    return {name: entry for name, entry in _extractors.items() if entry.builtin}


def _find(table: dict[str, Family], name: str) -> Family | None:
    entry = table.get(name)
    if entry is None or not entry.builtin:
        load_plugins()
        entry = table.get(name)
    return entry


def backbone_settings(spec: str, solver: str) -> dict[str, Any]:
    """The defaults that the backbone family of ``spec`` registered for ``solver`` (e.g. ``"endtoend"``); empty
    for the built-in families (``sd:`` ...: the published settings) and for a family that registered none."""
    family, _, name = spec.partition(":")
    entry = backbone_family(family)
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


# featscope's own families: (family, loader, usage, takes --backbone-config) and (family, loader, usage, listed).
# The only list of them: spec parsing, dispatch, error messages and ``featscope.backbones.FAMILIES`` read it here.
BUILTIN_BACKBONES: tuple[tuple[str, str, str, bool], ...] = (
    (
        "sd",
        "featscope.backbones.latent:load_sd",
        "sd:HUB_ID, sd:FOLDER or sd:FILE.ckpt|.safetensors (Stable Diffusion)",
        True,
    ),
    (
        "sdxl",
        "featscope.backbones.sdxl:load_sdxl",
        "sdxl:HUB_ID, sdxl:FOLDER or sdxl:FILE.safetensors (SDXL, Turbo, fine-tunes)",
        True,
    ),
    ("sd3", "featscope.backbones.flow:load_sd3", "sd3:HUB_ID or sd3:FOLDER (Stable Diffusion 3 / 3.5)", False),
    ("flux", "featscope.backbones.flow:load_flux", "flux:HUB_ID or flux:FOLDER (Flux.1)", False),
    ("pixel", "featscope.backbones.pixel:load_pixel", "pixel:FOLDER (a pixel-space diffusers model)", False),
)
BUILTIN_EXTRACTORS: tuple[tuple[str, str, str, bool], ...] = (
    ("clip", "featscope.extractors.clip_nets:build", "clip:ARCH (OpenAI CLIP's image tower)", True),
    ("torchvision", "featscope.extractors.torchvision_nets:build", "torchvision:NAME (a torchvision classifier)", True),
    ("timm", "featscope.extractors.timm_nets:build", "timm:NAME (a timm model)", True),
    ("open_clip", "featscope.extractors.clip_nets:build", "open_clip:ARCH/TAG_OR_PATH (an open_clip model)", True),
    ("module", "featscope.extractors.user_nets:build", "module.path:factory", False),  # the user's own networks
    ("file", "featscope.extractors.user_nets:build", "file.py:factory", False),
)
BUILTIN_FAMILIES = tuple(family for family, *_ in BUILTIN_BACKBONES)  # the backbone families plugins cannot own

for _family, _loader, _usage, _config in BUILTIN_BACKBONES:
    register_backbone(_family, _loader, _usage, takes_config=_config, builtin=True)
for _family, _loader, _usage, _listed in BUILTIN_EXTRACTORS:
    register_extractor(_family, _loader, _usage, builtin=True, listed=_listed)
del _family, _loader, _usage, _config, _listed
