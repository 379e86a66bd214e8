"""Real GPU runs: skipped where torch sees no CUDA GPU (every CI machine here); run them on a
GPU machine with ``pytest -m gpu``."""

from __future__ import annotations

import pytest
import torch

from nas.evaluation.accelerator import placement
from nas.evaluation.data import load_data
from nas.evaluation.training import Recipe, prepare_data, train_config
from shufflenet_core import PRESETS

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU")]

RECIPE = Recipe(train_size=2000, val_size=500)


def _data():  # noqa: ANN202
    return prepare_data(load_data("fashion-mnist"), RECIPE)


def test_cuda_training_uses_the_plain_layers_channels_last_and_bf16_and_learns() -> None:
    place = placement("cuda")
    assert place.device.startswith("cuda:") and not place.fast_layers
    result = train_config(PRESETS["shufflenet_v1_1.0x_g3"].config, _data(), RECIPE, seed=0, place=place)
    assert next(result.model.parameters()).device.type == "cuda"
    assert not result.diverged and result.accuracy > 0.5


def test_cuda_and_cpu_agree_within_seed_noise() -> None:
    config = PRESETS["shufflenet_v1_0.5x_g3"].config
    data = _data()
    gpu = [train_config(config, data, RECIPE, seed=s, place=placement("cuda", "fp32")).accuracy for s in range(3)]
    cpu = [train_config(config, data, RECIPE, seed=s).accuracy for s in range(3)]
    assert abs(sum(gpu) / 3 - sum(cpu) / 3) < 0.05


def test_running_out_of_gpu_memory_is_torchs_error_and_the_memory_comes_back() -> None:
    from nas.evaluation.accelerator import release_memory

    free_before = torch.cuda.mem_get_info()[0]
    with pytest.raises(torch.OutOfMemoryError):
        torch.empty(int(free_before * 4), dtype=torch.uint8, device="cuda")
    release_memory()
    assert torch.cuda.mem_get_info()[0] >= 0.9 * free_before
