"""The keywords every investigation function shares, declared once.

:func:`investigation` turns a method's plan function ``plan(call, *arguments) -> build`` (``build(device) ->
Plan``) into its public function ``method(*arguments, out, backbone, settings, seed, device, quiet, config, ranks,
**overrides)``: it resolves the method's settings and the solver's from ``settings``, ``config`` and the keyword
``overrides`` (:func:`~featscope.investigate.inputs.method_settings`), hands them to the plan as a :class:`Call`
and runs the plan into ``out`` (:func:`~featscope.orchestration.run_plan`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from featscope.errors import FeatscopeError
from featscope.investigate.common import DEFAULT_BACKBONE
from featscope.investigate.inputs import endtoend_settings, method_settings
from featscope.orchestration import Plan, run_plan

if TYPE_CHECKING:
    import torch

    from featscope.backbones.base import Backbone

ENDTOEND = "endtoend"  # ``solver=``: the end-to-end solver, with the backbone family's defaults

COMMON_KEYWORDS = """

Every investigation also takes ``out`` (the run folder: one sub-folder per item, ``summary.json``,
``summary.md``; a re-run skips the items already done), ``backbone`` (a spec or a loaded backbone), ``settings``
(the method's settings dataclass), ``device`` (``auto``, ``cpu``, ``cuda:0``...), ``quiet`` (no progress bars or
item lines), ``ranks`` (None: share the items among torchrun's ranks) and the keyword ``overrides`` of any field
of the settings or the solver's; the optimising methods also ``seed`` (the first item's) and ``config`` (the
solver's settings; None: the backbone family's defaults). Returns the summary (rank 0; other ranks None)."""


@dataclass(frozen=True)
class Call:
    """One call of an investigation, as its plan sees it: the resolved settings of the method (``options``) and
    of the solver (None for a method without one), the backbone spec (or loaded backbone), the seed and
    ``quiet``."""

    options: Any
    solver: Any
    backbone: str | Backbone
    seed: int
    quiet: bool


Build = Callable[["torch.device"], Plan]


def investigation(
    settings_class: type, *, solver: type | str | None = ENDTOEND, defaults: str | None = None, seeded: bool = True
) -> Callable[[Callable[..., Build]], Callable[..., dict | None]]:
    """Decorator: the public function of the plan it wraps (see the module). ``solver``: ``"endtoend"``, a
    settings dataclass (``config``'s type) or None (the method takes no ``config``); ``defaults``: which of the
    backbone family's end-to-end defaults (e.g. ``"neuron"``); ``seeded``: the method takes ``seed``."""

    def wrap(plan: Callable[..., Build]) -> Callable[..., dict | None]:
        method = plan.__name__
        own = inspect.signature(plan).replace(parameters=list(inspect.signature(plan).parameters.values())[1:])

        @functools.wraps(plan)
        def run(
            *arguments: Any,
            out: Any,
            backbone: str | Backbone = DEFAULT_BACKBONE,
            settings: Any = None,
            device: str = "auto",
            quiet: bool = False,
            config: Any = None,
            ranks: Any = None,
            **overrides: Any,
        ) -> dict | None:
            given = own.bind(*arguments, **{name: overrides.pop(name) for name in own.parameters if name in overrides})
            seed = int(overrides.pop("seed", 0)) if seeded else 0
            if solver is None and config is not None:
                raise FeatscopeError(f"{method} takes no solver config; give its settings as keywords")
            if solver == ENDTOEND:
                options, solved = endtoend_settings(settings_class, settings, overrides, method=method, config=config,
                                                    backbone=backbone, defaults=defaults)  # fmt: skip
            else:
                options, solved = method_settings(settings_class, settings, overrides, method=method, solver=solver,
                                                  config=config)  # fmt: skip
            build = plan(Call(options, solved, backbone, seed, quiet), *given.args, **given.kwargs)
            return run_plan(build, out=out, device=device, quiet=quiet, ranks=ranks)

        run.__signature__ = _signature(own, seeded=seeded, configured=solver is not None)  # type: ignore[attr-defined]
        run.__doc__ = (plan.__doc__ or "") + COMMON_KEYWORDS
        return run

    return wrap


def _signature(own: inspect.Signature, *, seeded: bool, configured: bool) -> inspect.Signature:
    """The public function's signature: the plan's own arguments (those after ``call``), then the common keywords."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    common = [
        inspect.Parameter("out", keyword),
        inspect.Parameter("backbone", keyword, default=DEFAULT_BACKBONE),
        inspect.Parameter("settings", keyword, default=None),
        *([inspect.Parameter("seed", keyword, default=0)] if seeded else []),
        inspect.Parameter("device", keyword, default="auto"),
        inspect.Parameter("quiet", keyword, default=False),
        *([inspect.Parameter("config", keyword, default=None)] if configured else []),
        inspect.Parameter("ranks", keyword, default=None),
        inspect.Parameter("overrides", inspect.Parameter.VAR_KEYWORD),
    ]
    return inspect.Signature([*own.parameters.values(), *common], return_annotation="dict | None")
