"""Class-per-folder image datasets (the ImageNet / CUB / Cars / Food-101 layout): ``ROOT/<class_dir>/*.jpg|png``.

Classes are the sub-folders of ``ROOT`` that hold images, sorted by folder name (the usual class index
order); images are sorted by file name inside each class. A class-names file (one name per line, in the
sorted folder order, or ``dir<TAB>name`` lines) gives readable names, e.g. ``n01443537<TAB>goldfish``.
A folder holding images directly (no class sub-folders) is one class named after the folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from featscope.errors import FeatscopeError, InputFileError, suggest

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class ImageItem:
    """One image of a dataset: its file, class folder, readable class name and class index."""

    path: Path
    class_dir: str
    class_name: str
    class_index: int

    @property
    def item_id(self) -> str:
        """A folder-safe id unique within the dataset: ``<class_dir>_<file stem>`` (loose files: the stem)."""
        return safe_id(f"{self.class_dir}_{self.path.stem}" if self.class_dir else self.path.stem)


def safe_id(text: str) -> str:
    """``text`` with every character other than letters, digits, ``.``, ``-`` and ``_`` replaced by ``_``."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in text.strip())
    return cleaned.lstrip(".") or "item"


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_class_names(path: str | Path, class_dirs: list[str]) -> dict[str, str]:
    """Class folder -> readable name from a file of ``name`` lines (sorted folder order) or ``dir<TAB>name`` lines."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"class-names file {str(path)!r} does not exist; check the path")
    lines = [line.rstrip("\r\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if lines and all("\t" in line for line in lines):
        pairs = dict(line.split("\t", 1) for line in lines)
        return {d: pairs.get(d, d).strip() for d in class_dirs}
    if len(lines) != len(class_dirs):
        raise InputFileError(
            f"class-names file {str(path)!r} has {len(lines)} names for {len(class_dirs)} class folders; "
            "give one name per folder (sorted folder order) or dir<TAB>name lines"
        )
    return {d: name.strip() for d, name in zip(class_dirs, lines, strict=True)}


class ClassFolderDataset:
    """The images of ``root``, grouped by class folder, optionally a subset of classes and of images per class.

    ``classes`` selects classes by readable name or folder name (in the given order); an unknown one is a
    one-line error with the closest names. ``images_per_class`` keeps the first N images (sorted by name).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        class_names: str | Path | None = None,
        classes: list[str] | None = None,
        images_per_class: int | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            near = ""
            if self.root.parent.is_dir():
                near = suggest(self.root.name, [p.name for p in self.root.parent.iterdir() if p.is_dir()])
            raise InputFileError(f"dataset folder {str(self.root)!r} does not exist{near}; check the path")
        if images_per_class is not None and images_per_class < 1:
            raise FeatscopeError("images_per_class must be at least 1")
        dirs = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        dirs = [d for d in dirs if _images_in(self.root / d)]
        flat = not dirs and bool(_images_in(self.root))
        if not dirs and not flat:
            raise InputFileError(
                f"dataset folder {str(self.root)!r} holds no images (.jpg, .png, ...) nor class folders of images"
            )
        self.flat = flat
        all_dirs = ["."] if flat else dirs
        names = read_class_names(class_names, all_dirs) if class_names is not None else {}
        if flat:
            names.setdefault(".", self.root.name)
        self.class_dirs = all_dirs
        self.names = {d: names.get(d, d) for d in all_dirs}
        selected = self._select(classes) if classes else all_dirs
        self.items: list[ImageItem] = []
        for d in selected:
            files = _images_in(self.root / d)
            for path in files[:images_per_class] if images_per_class else files:
                self.items.append(ImageItem(path, self.names[d] if flat else d, self.names[d], all_dirs.index(d)))

    def _select(self, classes: list[str]) -> list[str]:
        by_name = {name: d for d, name in self.names.items()}
        chosen = []
        for wanted in classes:
            d = wanted if wanted in self.names else by_name.get(wanted)
            if d is None:
                known = list(self.names.values()) + list(self.names)
                raise FeatscopeError(
                    f"class {wanted!r} is not in dataset {str(self.root)!r}{suggest(wanted, known)} "
                    f"({len(self.names)} classes)"
                )
            if d not in chosen:
                chosen.append(d)
        return chosen

    @property
    def classes(self) -> list[str]:
        """Readable names of all classes, in class-index order."""
        return [self.names[d] for d in self.class_dirs]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def __getitem__(self, index: int) -> ImageItem:
        return self.items[index]


def image_items(files: list[str | Path]) -> list[ImageItem]:
    """Loose image files as items (class unknown: empty name, index -1); a missing file is a one-line error."""
    items = []
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise InputFileError(f"image file {str(path)!r} does not exist; check the path")
        items.append(ImageItem(path, "", "", -1))
    return items
