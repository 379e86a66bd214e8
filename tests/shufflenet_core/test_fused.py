"""The fused training BatchNorm kernels (shufflenet_core/csrc, loaded by shufflenet_core.fused).

Each fused op equals its float64 composition (BN, shuffle, residual add, ReLU) to float32
rounding, forward and backward, with the running statistics; a unit takes the fused path in
training and nowhere else; the build is safe with several processes at once and degrades to
PyTorch's ops, with one warning, where no compiler is found. The kernels must build here
(scripts/setup.sh builds them): a machine without a C++ compiler fails these tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from shufflenet_core import ShuffleNetConfig, build_model, fused
from shufflenet_core.model import ShuffleUnit, channel_shuffle
from shufflenet_core.ops import fused_batch_norm, fused_batch_norm_usable
from shufflenet_core.structure import unit_specs
from tests.conftest import REPO_ROOT

from .checks import assert_training_batch_norm_close, backward_nodes, relative_error


@pytest.fixture(autouse=True)
def kernels_on(monkeypatch):
    monkeypatch.delenv(fused.SWITCH, raising=False)
    assert fused.available(), fused.status()


CASES = [  # relu, residual, shuffle groups
    (False, False, 1), (True, False, 1), (True, True, 1), (False, True, 1),
    (True, False, 2), (True, False, 3), (True, False, 4), (True, False, 8), (False, False, 5),
]


@pytest.mark.parametrize("relu, residual, groups", CASES)
@pytest.mark.parametrize("batch, channels_per_group, size", [(32, 20, 4), (3, 7, 1), (2, 3, 3), (64, 6, 9)])
def test_fused_batch_norm_equals_the_float64_composition(relu, residual, groups, batch, channels_per_group, size) -> None:
    """Output, every gradient and the running statistics over two steps (off-centre inputs,
    odd channel counts for the vector tails, 1x1 maps, more rows than one thread's share)."""
    channels = channels_per_group * groups
    torch.manual_seed(channels + size + groups)
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    reference = nn.BatchNorm2d(channels).double()
    reference.load_state_dict(bn.state_dict())
    for step in range(2):
        x = torch.randn(batch, channels, size, size) * 3 + 4 * step - 2
        other = torch.randn_like(x)
        grad = torch.randn_like(x)
        fast_x = x.clone(memory_format=torch.channels_last).requires_grad_()
        fast_other = other.clone(memory_format=torch.channels_last).requires_grad_()
        ref_x, ref_other = x.double().requires_grad_(), other.double().requires_grad_()
        assert fused_batch_norm_usable(bn, fast_x)
        out = fused_batch_norm(bn, fast_x, relu=relu, residual=fast_other if residual else None, shuffle_groups=groups)
        expected = channel_shuffle(reference(ref_x), groups) if groups > 1 else reference(ref_x)
        if residual:
            expected = expected + ref_other
        if relu:
            expected = torch.relu(expected)
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert "_FusedRowsBatchNormBackward" in backward_nodes(out)
        out.backward(grad.contiguous(memory_format=torch.channels_last if step else torch.contiguous_format))
        expected.backward(grad.double())
        assert_training_batch_norm_close(out, expected, fast_x, ref_x, bn, reference, input_bound=2e-6)
        if residual:
            assert relative_error(fast_other.grad, ref_other.grad) == 0  # the masked gradient itself
        else:
            assert fast_other.grad is None


def test_a_large_mean_costs_the_variance_no_digits() -> None:
    """The sums run around a shift near the mean: E[x^2] - E[x]^2 taken naively in float32
    loses every digit of a unit variance under a mean of 1000."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(16)
    x = (torch.randn(64, 16, 4, 4) + 1000).contiguous(memory_format=torch.channels_last)
    out = fused_batch_norm(bn, x)
    expected = nn.functional.batch_norm(x.double(), None, None, training=True)
    assert relative_error(out, expected) < 1e-4  # the input itself is only known to 6e-5 (float32 at 1000)


def test_two_threads_agree_with_one() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 48, 4, 4).contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(x)
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            bn = nn.BatchNorm2d(48)
            leaf = x.clone().requires_grad_()
            out = fused_batch_norm(bn, leaf, relu=True, shuffle_groups=3)
            out.backward(grad)
            results.append((out.detach(), leaf.grad, bn.weight.grad, bn.running_var.clone()))
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*results, strict=True):
        torch.testing.assert_close(one, two, atol=1e-6, rtol=1e-6)


def _unit(stride: int, groups: int = 3) -> ShuffleUnit:
    config = ShuffleNetConfig.from_width(groups, 0.5, num_classes=10, input_size=32)
    spec = next(s for s in unit_specs(config) if s.stride == stride and s.stage == 1)
    torch.manual_seed(stride)
    return ShuffleUnit(spec)


@pytest.mark.parametrize("stride", [1, 2])
def test_a_training_unit_runs_fused_and_is_as_accurate_as_its_pytorch_path(stride: int, monkeypatch) -> None:
    """Against the same unit in float64: every gradient of the fused unit is as close as the
    PyTorch-ops path's (bn1.weight's is ill-conditioned, ~1e-3 in both; bn2.bias's is
    analytically zero, since bn3 removes any shift, so it is held to the gradients' scale)."""
    units = [_unit(stride) for _ in range(3)]
    for twin in units[1:]:
        twin.load_state_dict(units[0].state_dict())
    units[2].double()
    torch.manual_seed(5)
    x = torch.randn(16, units[0].pw1.in_channels, 4, 4).contiguous(memory_format=torch.channels_last)
    grad = None
    outputs = []
    for index, unit in enumerate(units):
        monkeypatch.setenv(fused.SWITCH, "1" if index == 0 else "0")
        leaf = (x.double() if index == 2 else x.clone()).requires_grad_()
        out = unit(leaf)
        assert ("_FusedRowsBatchNormBackward" in backward_nodes(out)) == (index == 0)
        grad = torch.randn_like(out) if grad is None else grad
        out.backward(grad.to(out.dtype))
        outputs.append((out.detach(), leaf.grad))
    reference_out, reference_grad = outputs[2]
    for (out, x_grad), bound in ((outputs[0], 1e-6), (outputs[1], 1e-6)):
        assert relative_error(out, reference_out) < bound
        assert relative_error(x_grad, reference_grad) < 1e-5
    scale = max(p.grad.abs().max().item() for p in units[2].parameters())
    named = zip(units[0].named_parameters(), units[1].parameters(), units[2].parameters(), strict=True)
    for (name, fused_param), pytorch_param, reference in named:
        fused_error = (fused_param.grad.double() - reference.grad).abs().max().item()
        pytorch_error = (pytorch_param.grad.double() - reference.grad).abs().max().item()
        if name.endswith("bn2.bias"):
            assert fused_error <= 1e-6 * scale, name
        else:
            assert fused_error <= max(1.5 * pytorch_error, 1e-6 * reference.grad.abs().max().item()), name
    for (name, a), b in zip(units[0].state_dict().items(), units[1].state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6, msg=name)


def test_the_fused_path_is_training_only_and_leaves_hooked_or_other_maps_alone() -> None:
    unit = _unit(1)
    x = torch.randn(8, unit.pw1.in_channels, 4, 4).contiguous(memory_format=torch.channels_last)
    assert unit._can_fuse(x)
    assert not unit._can_fuse(x.contiguous())  # NCHW
    assert not unit._can_fuse(x.double())
    assert not unit.eval()._can_fuse(x)
    unit.train()
    seen = []
    handle = unit.bn2.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    unit(x)
    handle.remove()
    assert seen == [torch.Size((8, unit.bn2.num_features, 4, 4))]  # the hook saw bn2 run on its own
    assert not unit._can_fuse(x[:1, :, :1, :1])  # one value per channel: left to nn.BatchNorm2d's error


def test_the_fast_build_trains_fused_and_like_the_plain_build() -> None:
    config = ShuffleNetConfig.from_width(3, 0.5, num_classes=10, in_channels=1, input_size=32)
    torch.manual_seed(0)
    fast, plain = build_model(config), build_model(config, fast=False)
    plain.load_state_dict(fast.state_dict())
    x, labels = torch.randn(16, 1, 32, 32), torch.randint(0, 10, (16,))
    losses = []
    for model in (fast, plain):
        loss = nn.functional.cross_entropy(model.train()(x), labels)
        assert ("_FusedRowsBatchNormBackward" in backward_nodes(loss)) == (model is fast)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)
    scale = max(p.grad.abs().max().item() for p in plain.parameters())
    for (name, p), q in zip(fast.named_parameters(), plain.parameters(), strict=True):
        assert (p.grad - q.grad).abs().max().item() <= 1e-4 * scale, name


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
                          env={**os.environ, **env})


TRAIN_ONE_STEP = """
import torch
from shufflenet_core import ShuffleNetConfig, build_model, fused
model = build_model(ShuffleNetConfig.from_width(3, 0.5, num_classes=10, in_channels=1, input_size=32)).train()
model(torch.randn(4, 1, 32, 32)).sum().backward()
print("available", fused.available())
print(fused.status())
"""


def test_without_a_compiler_training_warns_once_and_runs_pytorchs_ops(tmp_path) -> None:
    done = _python(TRAIN_ONE_STEP, {"XDG_CACHE_HOME": str(tmp_path), "CXX": str(tmp_path / "no-such-compiler"),
                                    fused.SWITCH: ""})
    assert done.returncode == 0, done.stderr
    assert "available False" in done.stdout
    assert "unavailable" in done.stdout
    assert done.stderr.count("fused BatchNorm kernels unavailable") == 1, done.stderr
    assert "Traceback" not in done.stderr
    kernels = tmp_path / "shufflenas" / "kernels"
    assert not list(kernels.glob("*.so")) and not list(kernels.glob("build-*"))  # nothing half-built left


@pytest.mark.slow
def test_parallel_first_builds_all_load_one_library(tmp_path) -> None:
    """Three processes build into an empty cache at once (as a search's workers could): each
    compiles in its own folder and renames into place, so all load and no lock is left."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), fused.SWITCH: ""}
    runs = [subprocess.Popen([sys.executable, "-c", TRAIN_ONE_STEP], cwd=REPO_ROOT, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err
        assert "available True" in out, err
    kernels = tmp_path / "shufflenas" / "kernels"
    assert len(list(kernels.glob("*.so"))) == 1
    assert not list(kernels.glob("build-*"))


def test_the_module_command_reports_the_path_and_exit_code() -> None:
    done = subprocess.run([sys.executable, "-m", "shufflenet_core.fused"], capture_output=True, text=True, timeout=300,
                          cwd=REPO_ROOT, env={**os.environ, fused.SWITCH: ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("fused BatchNorm kernels: on (") and str(fused.library_path()) in done.stdout
    off = subprocess.run([sys.executable, "-m", "shufflenet_core.fused"], capture_output=True, text=True, timeout=300,
                         cwd=REPO_ROOT, env={**os.environ, fused.SWITCH: "0"})
    assert off.returncode == 0 and "off" in off.stdout


def test_the_library_sits_in_the_cache_folder() -> None:
    path = fused.library_path()
    assert path.exists() and path.suffix == ".so"
    assert Path(path).parent.name == "kernels"


def test_under_cpu_autocast_the_fused_kernels_stand_aside() -> None:
    """Autocast would hand the BNs bfloat16 maps from the convs between them (the search trains
    bf16 with the plain layers; see nas.evaluation.accelerator.Placement.fast_layers)."""
    unit = _unit(1)
    x = torch.randn(8, unit.pw1.in_channels, 4, 4).contiguous(memory_format=torch.channels_last)
    assert unit._can_fuse(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not unit._can_fuse(x)
        assert not fused_batch_norm_usable(unit.bn1, x)


def _stride_one_pair() -> tuple[ShuffleUnit, ShuffleUnit, torch.Tensor]:
    """A stride-1 unit and its twin without the residual-gradient hand-off, and an input."""
    unit, twin = _unit(1), _unit(1)
    twin.load_state_dict(unit.state_dict())
    twin._residual_gradient_slot = lambda x: None  # type: ignore[method-assign]
    torch.manual_seed(3)
    x = torch.randn(16, unit.pw1.in_channels, 4, 4).contiguous(memory_format=torch.channels_last)
    return unit, twin, x


def test_the_residual_gradient_is_handed_to_pw1_and_the_gradients_are_unchanged(monkeypatch) -> None:
    """bn3's backward hands the residual's gradient to pw1's, which adds its own into it in
    place: the same gradients as letting autograd sum the two (checked against the unit with
    the hand-off switched off), and the hand-off really happens."""
    from shufflenet_core.ops import ResidualGradient

    unit, twin, x = _stride_one_pair()
    handed = []
    take = ResidualGradient.take
    monkeypatch.setattr(ResidualGradient, "take", lambda self: handed.append(take(self)) or handed[-1])
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    grad = torch.randn(16, unit.bn3.num_features, 4, 4)
    unit(a).backward(grad)
    assert len(handed) == 1 and handed[0] is not None
    twin(b).backward(grad)
    assert len(handed) == 1
    torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5)
    for (name, p), q in zip(unit.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-7, rtol=1e-5, msg=name)


def test_a_partial_gradient_first_leaves_the_full_one_right() -> None:
    """autograd.grad for bn3's weight alone runs bn3's backward (which hands the residual's
    gradient on) but not pw1's; the full backward after it must not see that stale hand-off."""
    unit, twin, x = _stride_one_pair()
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = unit(a)
    (partial,) = torch.autograd.grad(out.sum(), [unit.bn3.weight], retain_graph=True)
    out.sum().backward()
    twin(b).sum().backward()
    torch.testing.assert_close(partial, twin.bn3.weight.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(unit.pw1.weight.grad, twin.pw1.weight.grad, atol=1e-6, rtol=1e-5)


def test_an_input_without_gradient_takes_no_hand_off() -> None:
    unit, twin, x = _stride_one_pair()
    unit(x).sum().backward()
    twin(x.clone()).sum().backward()
    for (name, p), q in zip(unit.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-7, rtol=1e-5, msg=name)


@pytest.mark.slow
def test_a_cached_library_that_does_not_load_is_built_again(tmp_path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path), fused.SWITCH: ""}
    code = "from shufflenet_core import fused; print(fused.library_path())"
    path = Path(_python(code, env).stdout.strip())
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a shared library")
    done = _python(TRAIN_ONE_STEP, env)
    assert done.returncode == 0, done.stderr
    assert "available True" in done.stdout
    assert "rebuilding" in done.stderr and "unavailable" not in done.stderr
    assert path.read_bytes()[:4] == b"\x7fELF"


def _processes_working_in(folder: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str((proc / "cwd").readlink()).startswith(str(folder)):
                    found.append((proc / "cmdline").read_text().replace("\0", " ")[:80])
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_ctrl_c_during_a_build_stops_the_compiler_and_leaves_nothing(tmp_path) -> None:
    """Ctrl-C while the kernels compile: exit 130 with one line, the compiler processes (ninja
    runs them in process groups of their own) stopped, no temporary folder or library left."""
    import signal
    import time

    child = subprocess.Popen([sys.executable, "-m", "shufflenet_core.fused"], cwd=REPO_ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**os.environ, "XDG_CACHE_HOME": str(tmp_path), fused.SWITCH: ""},
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler))
    kernels = tmp_path / "shufflenas" / "kernels"
    deadline = time.time() + 60
    while not _processes_working_in(kernels) and time.time() < deadline:  # the compiler has started
        time.sleep(0.2)
    assert _processes_working_in(kernels), "no build started"
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted: nothing was built"
    time.sleep(1)
    assert _processes_working_in(kernels) == []
    assert list(kernels.iterdir()) == []
