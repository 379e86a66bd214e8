"""Real images in, tensors out: the embedded subset, image folders and CIFAR-10 batches."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from nas.evaluation.data import Dataset, load_data, stratified_split, validate_data_spec
from nas.errors import UserError


def test_embedded_fashion_mnist_is_real_and_split_three_ways() -> None:
    data = load_data("fashion-mnist")
    assert (len(data.train_labels), len(data.val_labels), len(data.test_labels)) == (10000, 2000, 2000)
    assert data.train_images.shape[1:] == (1, 28, 28) and data.train_images.dtype == np.uint8
    assert np.bincount(data.val_labels).tolist() == [200] * 10
    assert data.class_names[0] == "T-shirt/top"
    # Real images: varied pixel statistics, not constant or random noise.
    assert 50 < data.train_images.mean() < 100 and data.train_images.std() > 60


def test_stratified_split_is_disjoint_seeded_and_balanced() -> None:
    labels = np.repeat(np.arange(4), 30)
    kept, carved = stratified_split(labels, 0.2, seed=1)
    assert set(kept).isdisjoint(carved) and len(kept) + len(carved) == 120
    assert np.bincount(labels[carved]).tolist() == [6, 6, 6, 6]
    assert np.array_equal(carved, stratified_split(labels, 0.2, seed=1)[1])


def _save_pngs(root, data: Dataset, per_class: int, classes=("shirt", "shoe", "bag")) -> None:
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        members = np.flatnonzero(data.test_labels == label)[:per_class]
        for index in members:
            Image.fromarray(data.test_images[index, 0]).save(folder / f"{index}.png")


def test_image_folder_without_splits(tmp_path) -> None:
    fashion = load_data("fashion-mnist")
    _save_pngs(tmp_path / "flat", fashion, 30)
    data = load_data(f"imagefolder:{tmp_path / 'flat'}", image_size=32)
    assert data.class_names == ("bag", "shirt", "shoe")
    assert data.train_images.shape[1:] == (1, 32, 32)
    total = len(data.train_labels) + len(data.val_labels) + len(data.selection_labels) + len(data.test_labels)
    assert total == 90 and len(data.test_labels) == 9
    assert np.bincount(data.selection_labels).tolist() == [2, 2, 2]  # carved like val, at half its share


def test_image_folder_with_train_and_val(tmp_path) -> None:
    fashion = load_data("fashion-mnist")
    _save_pngs(tmp_path / "split" / "train", fashion, 20)
    _save_pngs(tmp_path / "split" / "val", fashion, 5)
    data = load_data(f"imagefolder:{tmp_path / 'split'}", image_size=28)
    assert len(data.test_labels) == 15
    assert len(data.train_labels) + len(data.val_labels) + len(data.selection_labels) == 60
    assert np.array_equal(data.test_images[0, 0], fashion.test_images[np.flatnonzero(fashion.test_labels == 2)[0], 0])


def _write_cifar(root, data: Dataset) -> None:
    root.mkdir()
    rgb = np.repeat(np.pad(data.test_images, ((0, 0), (0, 0), (2, 2), (2, 2))), 3, axis=1)
    for i in range(1, 6):
        batch = {b"data": rgb[(i - 1) * 100 : i * 100].reshape(100, -1), b"labels": data.test_labels[(i - 1) * 100 : i * 100].tolist()}
        (root / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    (root / "test_batch").write_bytes(pickle.dumps({b"data": rgb[500:600].reshape(100, -1), b"labels": data.test_labels[500:600].tolist()}))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))


def test_cifar10_batches(tmp_path) -> None:
    fashion = load_data("fashion-mnist")
    _write_cifar(tmp_path / "cifar", fashion)
    data = load_data(f"cifar10:{tmp_path / 'cifar'}")
    assert data.train_images.shape[1:] == (3, 32, 32) and len(data.test_labels) == 100
    assert data.class_names[3] == "c3"


def test_cifar_loader_refuses_code_in_pickles(tmp_path) -> None:
    fashion = load_data("fashion-mnist")
    _write_cifar(tmp_path / "evil", fashion)

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil" / "data_batch_1").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}))
    with pytest.raises(UserError, match="refusing to load builtins.print"):
        load_data(f"cifar10:{tmp_path / 'evil'}")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("imagefolder:/no/such/folder", "no data folder at /no/such/folder"),
        ("cifar10:/no/such/folder", "cifar-10-batches-py"),
        ("imagefolder", "needs a path"),
        ("mnist", "unknown data spec"),
    ],
)
def test_missing_or_unknown_data_says_how_to_get_it(spec: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        validate_data_spec(spec)


def test_image_folder_needs_classes(tmp_path) -> None:
    (tmp_path / "only").mkdir()
    with pytest.raises(UserError, match="one sub-folder per class"):
        load_data(f"imagefolder:{tmp_path}")


def test_the_embedded_selection_split_is_images_no_other_split_holds() -> None:
    from nas.evaluation import data as data_module

    with np.load(data_module._EMBEDDED) as archive:
        selection = set(archive["selection_indices"].tolist())
        assert len(selection) == 2000 and selection.isdisjoint(archive["train_indices"].tolist())
    fashion = load_data("fashion-mnist")
    assert np.bincount(fashion.selection_labels).tolist() == [200] * 10
    assert len(fashion.train_labels) == 10_000 and len(fashion.val_labels) == 2000  # the search's splits are unchanged
    images, labels = fashion.split("selection")
    assert images is fashion.selection_images and labels is fashion.selection_labels


def test_a_carved_selection_split_leaves_the_validation_images_as_they_were(tmp_path) -> None:
    fashion = load_data("fashion-mnist")
    _write_cifar(tmp_path / "cifar", fashion)
    data = load_data(f"cifar10:{tmp_path / 'cifar'}")
    pool_labels = np.array(fashion.test_labels[:500])
    _, val_index = stratified_split(pool_labels, 1 / 6, 0)
    assert np.array_equal(data.val_labels, pool_labels[val_index])
    assert len(data.train_labels) + len(data.val_labels) + len(data.selection_labels) == 500
    assert 30 <= len(data.selection_labels) <= 50
