"""--accelerator and --train-precision: selection, the one-line error, the per-device layers,
the spreading of workers over GPUs, and mixed precision (bf16 autocast runs on CPUs too).

No GPU exists on the machines CI runs on: where a test needs torch to see GPUs, it replaces
torch.cuda's device counters (and nothing else) and says so; the real GPU runs are the `gpu`
tests and benchmarks/gpu.py.
"""

from __future__ import annotations

import pytest
import torch

from nas.errors import UserError
from nas.evaluation import accelerator as acc
from nas.evaluation.accelerator import Placement, check_accelerator, pin_worker, placement
from nas.evaluation.data import load_data
from nas.evaluation.training import Recipe, prepare_data, train_config
from shufflenet_core import PRESETS
from tests.conftest import run_nas

NO_GPU = not torch.cuda.is_available()


@pytest.mark.skipif(not NO_GPU, reason="checks the machine without a GPU")
def test_auto_is_the_cpu_here_and_cuda_is_one_clear_line() -> None:
    assert check_accelerator("auto") == "cpu (fp32)"
    here = placement("auto")
    assert here.device == "cpu" and here.fast_layers and here.precision == "fp32"
    with pytest.raises(UserError, match=r"--accelerator cuda: torch .* sees no CUDA GPU; use --accelerator cpu or auto"):
        check_accelerator("cuda")
    with pytest.raises(UserError, match="sees no CUDA GPU"):
        check_accelerator("cuda:1")


@pytest.mark.parametrize(("accelerator", "precision", "says"), [
    ("tpu", "auto", "--accelerator must be one of auto, cpu, cuda, cuda:N, mps"),
    ("cuda:x", "auto", "--accelerator must be one of"),
    ("cpu:0", "auto", "--accelerator must be one of"),
    ("cpu", "fp8", "--train-precision must be one of auto, bf16, fp16, fp32"),
    ("cpu", "fp16", "--train-precision fp16 needs a GPU"),
])
def test_bad_values_are_refused(accelerator: str, precision: str, says: str) -> None:
    with pytest.raises(UserError, match=says.replace("(", r"\(")):
        check_accelerator(accelerator, precision)


@pytest.mark.skipif(not NO_GPU, reason="checks the machine without a GPU")
@pytest.mark.parametrize("args", [["--accelerator", "cuda"], ["--accelerator", "gpu"], ["--train-precision", "fp16"]])
def test_search_refuses_a_missing_or_bad_accelerator_before_writing_anything(tmp_path, args: list[str]) -> None:
    db = tmp_path / "s.db"
    result = run_nas("search", "--budget", "40M", "--storage", str(db), "--n-trials", "2", *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("nas: error: --")
    assert not db.exists()


def test_the_layers_follow_the_device() -> None:
    assert Placement("cpu").fast_layers and not Placement("cpu").channels_last
    gpu = Placement("cuda:1", "NVIDIA H200", "bf16")
    assert not gpu.fast_layers and gpu.channels_last and gpu.kind == "cuda"
    assert gpu.to_dict() == {"device": "cuda:1", "device_name": "NVIDIA H200", "train_precision": "bf16",
                             "layers": "plain nn.Conv2d(groups)"}
    assert not Placement("mps", "Apple MPS").fast_layers
    assert not Placement("cpu", "cpu", "bf16").fast_layers  # the fast layers write fp32: autocast gets the plain ones


def test_bf16_training_runs_under_autocast_and_stays_close_to_fp32() -> None:
    data = prepare_data(load_data("fashion-mnist"), Recipe(train_size=256, val_size=200, batch_size=64))
    recipe = Recipe(train_size=256, val_size=200, batch_size=64)
    config = PRESETS["shufflenet_v1_0.5x_g3"].config
    fp32 = train_config(config, data, recipe, seed=1)
    bf16 = train_config(config, data, recipe, seed=1, place=Placement("cpu", "cpu", "bf16"))
    assert not bf16.diverged and 0.0 < bf16.accuracy <= 1.0
    assert bf16.accuracy != fp32.accuracy or bf16.val_accuracy_per_epoch == fp32.val_accuracy_per_epoch
    assert abs(bf16.accuracy - fp32.accuracy) < 0.15  # a few hundred images: same ballpark, not the same digits


class FakeCuda:
    """Stands in for torch.cuda's device counters: a GPU cannot exist on this machine."""

    def __init__(self, monkeypatch, count: int) -> None:  # noqa: ANN001
        self.set_to: list[int] = []
        self.shares: list[tuple[float, int]] = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", self.set_to.append)
        monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda share, device: self.shares.append((share, device)))
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)


@pytest.mark.parametrize(("workers", "gpus", "expected"), [
    (4, 2, [(0, 0.5), (1, 0.5), (0, 0.5), (1, 0.5)]),
    (3, 2, [(0, 0.5), (1, None), (0, 0.5)]),
    (2, 4, [(0, None), (1, None)]),
    (8, 1, [(0, 0.125)] * 8),
])
def test_workers_are_spread_over_the_gpus_each_with_its_share_of_memory(monkeypatch, workers, gpus, expected) -> None:
    fake = FakeCuda(monkeypatch, gpus)
    got = []
    for worker in range(workers):
        fake.shares.clear()
        assert pin_worker("cuda", worker, workers) == fake.set_to[-1]
        got.append((fake.set_to[-1], fake.shares[0][0] if fake.shares else None))
    assert got == expected
    assert check_accelerator("auto") == "cuda (bf16)"
    assert "up to" in acc.describe_plan("cuda", "auto", workers)


def test_an_explicit_gpu_takes_every_worker(monkeypatch) -> None:
    fake = FakeCuda(monkeypatch, 2)
    for worker in range(3):
        pin_worker("cuda:1", worker, 3)
    assert fake.set_to == [1, 1, 1] and all(device == 1 and share == pytest.approx(1 / 3) for share, device in fake.shares)
    assert pin_worker("cpu", 0, 3) is None


def test_the_plan_says_whether_cpu_training_takes_the_fused_batch_norm_kernels(monkeypatch) -> None:
    from shufflenet_core import fused

    monkeypatch.delenv(fused.SWITCH, raising=False)
    assert acc.describe_plan("cpu", "auto", 2) == "cpu, fp32, fast CPU layers, fused BatchNorm kernels"
    monkeypatch.setenv(fused.SWITCH, "0")
    assert acc.describe_plan("cpu", "auto", 2) == "cpu, fp32, fast CPU layers, PyTorch's BatchNorm ops"
    assert "BatchNorm" not in acc.describe_plan("cpu", "bf16", 2)  # bf16 maps never take the float32 kernels
