"""Option groups that several commands share (models, runtime, speed, image datasets) and small parsers."""

from __future__ import annotations

import argparse
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn

from featscope.errors import FeatscopeError, invalid_choice
from featscope.settings import Settings, add_options, given_options

if TYPE_CHECKING:
    from featscope.datasets import ClassFolderDataset

Parser = argparse.ArgumentParser | argparse._ArgumentGroup


class OneLineParser(argparse.ArgumentParser):
    """A parser whose usage errors are one line, ``featscope: error: ...; see PROG --help`` (exit 2), an invalid
    choice naming the choices and the nearest one; its sub-command parsers are of this class too."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            raise argparse.ArgumentError(action, invalid_choice(value, action.choices))

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"featscope: error: {' '.join(message.split())}; see {self.prog} --help\n")


@dataclass(frozen=True)
class Command:
    """A command's name, one-line help, description and examples (``epilog``, shown with its line breaks)."""

    name: str
    help: str
    description: str
    epilog: str | None = None

    @classmethod
    def of(cls, declared: ModuleType | Callable) -> Command:
        """The record of a command module or of the function that declares a sub-command (``_add_NAME``): the
        name, the help line (the docstring's first line, after its ``featscope NAME``: label), the description
        (the docstring's other paragraphs) and the examples (the module's ``EPILOG``)."""
        first, _, description = inspect.cleandoc(declared.__doc__).partition("\n\n")
        if first.startswith("``featscope"):
            first = first.partition(": ")[2]
        name = declared.__name__.rsplit(".", 1)[-1].removeprefix("_add_")
        help = " ".join(first.split()).removesuffix(".")
        return cls(name, help, " ".join(description.split()), getattr(declared, "EPILOG", None))


def command_parser(
    sub: argparse._SubParsersAction, name: str, help: str, description: str, epilog: str | None = None
) -> argparse.ArgumentParser:
    """A (sub-)command's parser: ``epilog`` (examples, formulas) keeps its own line breaks."""
    if epilog is None:
        return sub.add_parser(name, help=help, description=description)
    raw = argparse.RawDescriptionHelpFormatter  # keeps the epilog's lines, so the description is wrapped here
    return sub.add_parser(
        name, help=help, description=textwrap.fill(description, 100), epilog=epilog, formatter_class=raw
    )


def sub_command(
    sub: argparse._SubParsersAction, declare: Callable, epilog: str | None = None
) -> argparse.ArgumentParser:
    """The parser of the sub-command that ``declare`` (``_add_NAME``) declares, from its docstring."""
    c = Command.of(declare)
    return command_parser(sub, c.name, c.help, c.description, epilog)


def add_knobs(parser: argparse.ArgumentParser, group: Parser, cls: type[Settings], **kwargs: Any) -> None:
    """One option per knob of ``cls`` in ``group`` (see :func:`featscope.settings.add_options`); :func:`knobs`
    reads back the ones the user set (of every class added to ``parser`` this way)."""
    parser.set_defaults(knobs=(parser.get_default("knobs") or ()) + tuple(add_options(group, cls, **kwargs)))


def knobs(args: argparse.Namespace) -> dict[str, Any]:
    """The settings-dataclass options of the command that the user set on the command line."""
    return given_options(args, list(args.knobs))


BACKBONE_HELP = (
    "diffusion model: sd:HUB_ID_OR_FOLDER, sd:FILE.ckpt|.safetensors, sdxl:..., sd3:..., flux:..., pixel:FOLDER, "
    "world:ddpm (the embedded model)"
)


def add_backbone(parser: Parser, *, required: bool = False) -> None:
    """--backbone SPEC (default: world:ddpm unless ``required``)."""
    default = {"required": True} if required else {"default": "world:ddpm"}
    suffix = "" if required else " (default: %(default)s)"
    parser.add_argument("--backbone", **default, metavar="SPEC", help=BACKBONE_HELP + suffix)


def add_output(
    parser: Parser,
    help: str,
    *,
    overwrite: str | None = None,
    metavar: str = "DIR",
    default: str | None = None,
    required: bool = True,
) -> None:
    """--out (required unless it has a ``default`` or ``required`` is off) and, when ``overwrite`` (its help) is
    given, --overwrite."""
    shown = " (default: %(default)s)" if default is not None else ""
    parser.add_argument(
        "--out", default=default, required=required and default is None, metavar=metavar, help=help + shown
    )
    if overwrite is not None:
        parser.add_argument("--overwrite", action="store_true", help=overwrite)


def add_model_options(parser: argparse.ArgumentParser, *, backbone: bool = True) -> None:
    """--backbone, --backbone-config (with ``backbone``), --extractor and --extractor-weights."""
    group = parser.add_argument_group("models")
    if backbone:
        add_backbone(group)
        group.add_argument(
            "--backbone-config",
            metavar="FOLDER_OR_ID",
            help="diffusers config (folder or hub id) for an sd: or sdxl: single-file checkpoint that "
            "diffusers cannot infer, e.g. a fine-tuned SD 1.x",
        )
    group.add_argument(
        "--extractor",
        default="world:shape-net",
        metavar="SPEC",
        help="network under study, optionally @layer: clip:RN50, torchvision:resnet50, "
        "torchvision:vit_h_14, torchvision:NAME@layer, timm:NAME@layer, open_clip:ARCH/PRETRAINED, "
        "pkg.module:factory, world:shape-net|color-net|spurious-net (default: %(default)s)",
    )
    add_extractor_weights(group)


def add_extractor_weights(parser: Parser) -> None:
    """--extractor-weights FILE."""
    parser.add_argument(
        "--extractor-weights",
        metavar="FILE",
        help="local weights (state dict) for the extractor instead of its published download",
    )


DEVICES = "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps"


def add_device(parser: Parser, *, accelerate: bool = False, default: str | None = "auto") -> None:
    """--device; ``accelerate``: a training command whose GPUs accelerate picks; ``default`` None: keep the
    study's."""
    if accelerate:
        help_text = "auto or cpu (accelerate picks the GPU)"
    elif default is None:
        help_text = f"replaces the study's device: {DEVICES}"
    else:
        help_text = DEVICES
    parser.add_argument("--device", default=default, help=help_text)


def add_quiet(parser: Parser, what: str = "progress bars") -> None:
    """--quiet: no progress bars (and, where a command prints per-item lines, ``what`` says so)."""
    parser.add_argument("--quiet", action="store_true", help=f"no {what}")


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """--device, --dtype and --quiet."""
    group = parser.add_argument_group("runtime")
    add_device(group)
    group.add_argument(
        "--dtype",
        default="fp32",
        choices=["fp32", "fp16", "bf16"],
        help="network precision under autocast; loss and gradient rescale stay fp32",
    )
    add_quiet(group)


def add_speed_options(parser: argparse.ArgumentParser) -> None:
    """--channels-last, --compile and --low-memory."""
    group = parser.add_argument_group("speed and memory (all off by default; see docs/speed.md for measurements)")
    group.add_argument("--channels-last", action="store_true", help="NHWC memory layout for every conv network")
    group.add_argument("--compile", action="store_true", help="torch.compile the networks (one-off compile cost)")
    group.add_argument(
        "--low-memory",
        action="store_true",
        help="gradient checkpointing of the UNet and VAE: lower peak memory, about a third more time",
    )


def speed(args: argparse.Namespace) -> Any:
    """The :class:`featscope.speed.SpeedOptions` of the speed options."""
    from featscope.speed import SpeedOptions

    return SpeedOptions(channels_last=args.channels_last, compile=args.compile, low_memory=args.low_memory)


def add_images_options(parser: argparse.ArgumentParser) -> None:
    """Image files or one class-folder dataset, with its class names and selection."""
    d = parser.add_argument_group("images (files, or one dataset folder ROOT/<class>/*.jpg|png)")
    d.add_argument(
        "images", nargs="+", metavar="IMAGE_OR_DATASET", help="image files, or one dataset folder ROOT/<class>/"
    )
    d.add_argument("--class-names", metavar="FILE", help="class names: one per line (folder order) or dir<TAB>name")
    d.add_argument("--classes", metavar="A,B", help="only these classes of the dataset (names or folder names)")
    d.add_argument("--images-per-class", type=int, metavar="N", help="the first N images of each class")


def selected_images(args: argparse.Namespace) -> list[str] | ClassFolderDataset:
    """The images of :func:`add_images_options`: the files, or the dataset folder with --class-names, --classes and
    --images-per-class; those options with image files are an error."""
    from featscope.datasets import ClassFolderDataset

    selection = {"class_names": args.class_names, "images_per_class": args.images_per_class,
                 "classes": names(args.classes) if args.classes else []}  # fmt: skip
    if not any(selection.values()):
        return list(args.images)
    if len(args.images) != 1 or not Path(args.images[0]).is_dir():
        raise FeatscopeError("--class-names, --classes and --images-per-class select from one dataset folder; "
                             "give the folder instead of image files")  # fmt: skip
    return ClassFolderDataset(args.images[0], **selection)


def add_investigate_common(parser: argparse.ArgumentParser, *, out: str) -> None:
    """--backbone, --out, --device and --quiet of the end-to-end commands."""
    add_backbone(parser)
    add_output(parser, "one folder per item in here", default=out)
    add_device(parser)
    add_quiet(parser, "progress bars or item lines")


def pick(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """``{name: args.name}`` for each name: the options a handler passes on under their own names."""
    return {name: getattr(args, name) for name in names}


def names(text: str) -> list[str]:
    """The items of a comma-separated option value."""
    return [name.strip() for name in text.split(",") if name.strip()]


def numbers(text: str | None, kind: type, what: str, takes: str = "comma-separated numbers") -> list | None:
    """The numbers of a comma-separated option value (None stays None); errors say ``{what} takes {takes}``."""
    if text is None:
        return None
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise FeatscopeError(f"{what} takes {takes}, not {text!r}") from None


def print_summary(summary: dict | None, out: str) -> None:
    """Print an end-to-end command's summary.md and what it wrote (nothing on ranks other than 0)."""
    if summary is None:  # not rank 0
        return
    print(Path(out, "summary.md").read_text())
    print(f"wrote {out}/ ({summary['done']} of {summary['items']} items, summary.json, summary.md)")
