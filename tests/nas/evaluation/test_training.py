"""Proxy training: real learning, determinism, tensors end to end."""

from __future__ import annotations

import torch

from nas.evaluation.data import load_data
from nas.evaluation.training import Recipe, prepare_data, proxy_config, train_config
from shufflenet_core import get_preset

RECIPE = Recipe(epochs=2, train_size=1500, val_size=500, resolution=32)


def test_training_learns_real_images() -> None:
    data = prepare_data(load_data(), RECIPE)
    result = train_config(get_preset("shufflenet_v1_0.25x_g1"), data, RECIPE, seed=0)
    assert len(result.val_accuracy_per_epoch) == 2
    assert result.accuracy > 0.45  # 10 classes: chance is 0.10
    assert not result.diverged


def test_same_seed_same_result_other_seed_differs() -> None:
    recipe = Recipe(epochs=1, train_size=600, val_size=300)
    data = prepare_data(load_data(), recipe)
    config = get_preset("shufflenet_v1_0.25x_g3")
    first = train_config(config, data, recipe, seed=5)
    second = train_config(config, data, recipe, seed=5)
    third = train_config(config, data, recipe, seed=6)
    assert first.val_accuracy_per_epoch == second.val_accuracy_per_epoch
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), third.model.state_dict().values()))


def test_prepared_data_is_normalised_tensors_at_the_proxy_resolution() -> None:
    recipe = Recipe(resolution=40, train_size=500, val_size=100)
    data = prepare_data(load_data(), recipe)
    assert data.train_images.shape == (500, 1, 40, 40) and data.train_images.dtype == torch.float32
    assert abs(float(data.train_images.mean())) < 0.05 and abs(float(data.train_images.std()) - 1) < 0.05
    assert torch.bincount(data.train_labels).tolist() == [50] * 10
    assert prepare_data(load_data(), recipe) is data  # cached for every trial of a search
    config = proxy_config(get_preset("shufflenet_v1_1.0x_g3"), data)
    assert (config.num_classes, config.in_channels, config.input_size) == (10, 1, 40)


def test_progress_callbacks_and_early_stop() -> None:
    recipe = Recipe(epochs=3, train_size=300, val_size=100)
    data = prepare_data(load_data(), recipe)
    steps, epochs = [], []

    class Stop(Exception):
        pass

    def on_epoch(epoch: int, accuracy: float) -> None:
        epochs.append(epoch)
        if epoch == 1:
            raise Stop

    try:
        train_config(get_preset("shufflenet_v1_0.25x_g8"), data, recipe, on_epoch=on_epoch, on_step=lambda d, t: steps.append((d, t)))
    except Stop:
        pass
    assert epochs == [0, 1]
    assert steps[-1] == (2 * (300 // 128), 3 * (300 // 128))
