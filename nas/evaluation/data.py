"""Real images for proxy training, held in memory as tensors (no per-sample Python).

Specs accepted by ``--data``:
- ``fashion-mnist`` (default): a 12k/2k/2k (train+val / selection / test) subset of Fashion-MNIST shipped with the package;
- ``fashion-mnist:full``: all 60k/10k images from Debian's ``dataset-fashion-mnist`` files;
- ``imagefolder:PATH``: one sub-folder per class (the ImageNet layout); if PATH holds
  ``train/`` and ``val/`` (or ``test/``) those are the splits, else a test split is carved;
- ``cifar10:PATH``: the CIFAR-10 "python version" batches.
A validation split is always carved (stratified, seeded) from the training images; the search
scores candidates on it. A selection split, which no search sees, is where ``nas final``
chooses its answer: the embedded data ships one (2k extra images), other data sets carve it
from the training images (half the validation split's share). The test split is kept for
final reports only.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from nas.errors import UserError

__all__ = ["Dataset", "DEFAULT_DATA", "SPLITS", "load_data", "validate_data_spec"]

SPLITS = ("train", "val", "selection", "test")

DEFAULT_DATA = "fashion-mnist"
_EMBEDDED = Path(__file__).parents[1] / "data" / "fashion_mnist_subset.npz"
_DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images as uint8 arrays (N, C, H, W) and int64 labels, split three ways (hashed by identity)."""

    spec: str
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    selection_images: np.ndarray
    selection_labels: np.ndarray

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of one split: "train", "val", "selection" or "test"."""
        if name not in SPLITS:
            raise UserError(f"unknown split {name!r}; one of {', '.join(SPLITS)}")
        return getattr(self, f"{name}_images"), getattr(self, f"{name}_labels")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])

    def describe(self) -> str:
        return (
            f"{self.spec}: {len(self.train_labels)} train / {len(self.val_labels)} val / "
            f"{len(self.selection_labels)} selection / {len(self.test_labels)} test images, {self.num_classes} classes, "
            f"{self.in_channels}x{self.image_size}x{self.image_size}"
        )


def validate_data_spec(spec: str) -> str:
    """Check a spec's form (cheaply, without loading); return it normalised."""
    spec = (spec or DEFAULT_DATA).strip()
    kind, _, path = spec.partition(":")
    if kind == "fashion-mnist" and path in ("", "full"):
        if path == "full" and not (_DEBIAN_FASHION / "train-images-idx3-ubyte.gz").exists():
            raise UserError(
                "fashion-mnist:full needs Debian's files: sudo apt-get install dataset-fashion-mnist "
                "(or use the embedded subset: --data fashion-mnist)"
            )
        return spec
    if kind in ("imagefolder", "cifar10"):
        if not path:
            raise UserError(f"--data {kind}: needs a path, e.g. --data {kind}:/data/{kind}")
        if not Path(path).expanduser().is_dir():
            hint = (
                "a folder with one sub-folder of images per class"
                if kind == "imagefolder"
                else "the extracted 'cifar-10-batches-py' folder from https://www.cs.toronto.edu/~kriz/cifar.html"
            )
            raise UserError(f"no data folder at {path}; --data {kind}:PATH needs {hint}")
        return f"{kind}:{Path(path).expanduser().resolve()}"
    raise UserError(
        f"unknown data spec {spec!r}; use fashion-mnist, fashion-mnist:full, imagefolder:PATH or cifar10:PATH"
    )


def load_data(spec: str = DEFAULT_DATA, *, val_fraction: float = 1 / 6, seed: int = 0, image_size: int = 64) -> Dataset:
    """Load and split a data set (cached per arguments). ``image_size`` applies to image folders."""
    return _load(validate_data_spec(spec), float(val_fraction), int(seed), int(image_size))


@lru_cache(maxsize=4)
def _load(spec: str, val_fraction: float, seed: int, image_size: int) -> Dataset:
    kind, _, path = spec.partition(":")
    shipped_selection: tuple[np.ndarray, np.ndarray] | None = None
    if kind == "fashion-mnist" and path != "full":
        train_x, train_y, test_x, test_y, *selection = _fashion_embedded()
        shipped_selection = (selection[0], selection[1])
        classes = FASHION_CLASSES
    elif kind == "fashion-mnist":
        train_x, train_y, test_x, test_y = _fashion_full()
        classes = FASHION_CLASSES
    elif kind == "cifar10":
        train_x, train_y, test_x, test_y, classes = _cifar10(Path(path))
    else:
        train_x, train_y, test_x, test_y, classes = _image_folder(Path(path), image_size, seed)
    train_index, val_index = stratified_split(train_y, val_fraction, seed)
    if shipped_selection is not None:
        selection_x, selection_y = shipped_selection
    else:  # carved after the validation split, so val is the same images as before selection existed
        kept, carved = stratified_split(train_y[train_index], val_fraction / 2 / (1 - val_fraction), seed + 1)
        selection_x, selection_y = train_x[train_index[carved]], train_y[train_index[carved]]
        train_index = train_index[kept]
    return Dataset(
        spec=spec,
        train_images=train_x[train_index],
        train_labels=train_y[train_index],
        val_images=train_x[val_index],
        val_labels=train_y[val_index],
        test_images=test_x,
        test_labels=test_y,
        class_names=tuple(classes),
        selection_images=selection_x,
        selection_labels=selection_y,
    )


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, carved): ``fraction`` of each class carved out, seeded."""
    if not 0 < fraction < 1:
        raise UserError(f"validation fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    carved = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = max(1, int(round(len(members) * fraction))) if len(members) > 1 else 0
        carved.append(rng.choice(members, count, replace=False))
    carved_index = np.sort(np.concatenate(carved)) if carved else np.array([], dtype=np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), carved_index)
    return kept, carved_index


def _fashion_embedded() -> tuple[np.ndarray, ...]:
    if not _EMBEDDED.exists():
        raise UserError(f"the embedded data file {_EMBEDDED} is missing; reinstall shufflenas")
    with np.load(_EMBEDDED) as archive:
        return (
            archive["train_images"][:, None],
            archive["train_labels"].astype(np.int64),
            archive["test_images"][:, None],
            archive["test_labels"].astype(np.int64),
            archive["selection_images"][:, None],
            archive["selection_labels"].astype(np.int64),
        )


def _fashion_full() -> tuple[np.ndarray, ...]:
    def images(name: str) -> np.ndarray:
        with gzip.open(_DEBIAN_FASHION / name) as handle:
            return np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)

    def labels(name: str) -> np.ndarray:
        with gzip.open(_DEBIAN_FASHION / name) as handle:
            return np.frombuffer(handle.read(), np.uint8, offset=8).astype(np.int64)

    return (
        images("train-images-idx3-ubyte.gz"),
        labels("train-labels-idx1-ubyte.gz"),
        images("t10k-images-idx3-ubyte.gz"),
        labels("t10k-labels-idx1-ubyte.gz"),
    )


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles: allow numpy arrays and plain containers, nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _read_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            batch = _ArrayUnpickler(handle, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError) as error:
        raise UserError(f"cannot read CIFAR-10 batch {path}: {error}") from None
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in batch.items()}


def _cifar10(root: Path) -> tuple:
    names = [f"data_batch_{i}" for i in range(1, 6)]
    missing = [n for n in names + ["test_batch"] if not (root / n).exists()]
    if missing:
        raise UserError(
            f"{root} lacks CIFAR-10 batches ({', '.join(missing)}); download the python version "
            "from https://www.cs.toronto.edu/~kriz/cifar.html and extract it"
        )
    batches = [_read_batch(root / n) for n in names]
    test = _read_batch(root / "test_batch")

    def images(batch: dict) -> np.ndarray:
        return np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)

    classes = [f"class_{i}" for i in range(10)]
    if (root / "batches.meta").exists():
        meta = _read_batch(root / "batches.meta")
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", classes)]
    return (
        np.concatenate([images(b) for b in batches]),
        np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in batches]),
        images(test),
        np.asarray(test["labels"], dtype=np.int64),
        classes,
    )


def _image_folder(root: Path, image_size: int, seed: int) -> tuple:
    split_dirs = {name: root / name for name in ("train", "val", "test") if (root / name).is_dir()}
    if "train" in split_dirs and ("val" in split_dirs or "test" in split_dirs):
        classes = _class_names(split_dirs["train"])
        train_x, train_y = _read_folder(split_dirs["train"], classes, image_size)
        test_x, test_y = _read_folder(split_dirs["test"] if "test" in split_dirs else split_dirs["val"], classes, image_size)
        return train_x, train_y, test_x, test_y, classes
    classes = _class_names(root)
    images, labels = _read_folder(root, classes, image_size)
    kept, test_index = stratified_split(labels, 0.1, seed + 1)
    return images[kept], labels[kept], images[test_index], labels[test_index], classes


def _class_names(root: Path) -> list[str]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise UserError(f"{root} needs one sub-folder per class (at least 2), found {len(classes)}")
    return classes


def _read_folder(root: Path, classes: list[str], image_size: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        raise UserError("reading image folders needs Pillow: pip install pillow") from None
    images, labels = [], []
    mode = None
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(path) as image:
                    if mode is None:
                        mode = "L" if image.mode in ("L", "1", "I;16") else "RGB"
                    pixels = image.convert(mode).resize((image_size, image_size), Image.Resampling.BILINEAR)
                    array = np.asarray(pixels, dtype=np.uint8)
            except OSError as error:
                raise UserError(f"cannot read image {path}: {error}") from None
            images.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise UserError(f"no images ({', '.join(sorted(_IMAGE_SUFFIXES))}) under {root}")
    return np.stack(images), np.asarray(labels, dtype=np.int64)
