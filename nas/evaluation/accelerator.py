"""Where candidates train: the CPU, a CUDA GPU or Apple's MPS, and in which precision.

``--accelerator`` and ``--train-precision`` are checked once, before anything is written
(:func:`check_accelerator`), and resolved in each process that trains (:func:`placement`),
since a worker process is pinned to its own GPU. The layers follow the device: the fast
layers of :mod:`shufflenet_core.ops` are tuned for CPUs, so GPUs get the plain
``nn.Conv2d(groups)`` build that cuDNN runs well.

Results from different accelerators agree only within seed noise (other kernels, other
summation order, bf16): every trial stores where it trained (:data:`nas.records.ACCELERATOR`).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any

from nas.errors import UserError

__all__ = ["ACCELERATORS", "CPU", "PRECISIONS", "Placement", "check_accelerator", "pin_worker", "placement", "release_memory"]

ACCELERATORS = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass(frozen=True)
class Placement:
    """One process's training device and precision, as stored with each trial."""

    device: str = "cpu"
    """A torch device string: "cpu", "cuda:0", "mps"."""
    device_name: str = "cpu"
    precision: str = "fp32"
    """"fp32", "bf16" (autocast) or "fp16" (autocast and a gradient scaler)."""

    @property
    def kind(self) -> str:
        return self.device.partition(":")[0]

    @property
    def fast_layers(self) -> bool:
        """The CPU-tuned layers on the CPU at fp32 (they write fp32 outputs), the plain
        ``nn.Conv2d(groups)`` build elsewhere."""
        return self.kind == "cpu" and self.precision == "fp32"

    @property
    def channels_last(self) -> bool:
        return self.kind == "cuda"

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "device_name": self.device_name, "train_precision": self.precision,
                "layers": "fast CPU layers" if self.fast_layers else "plain nn.Conv2d(groups)"}

    def describe(self) -> str:
        return f"{self.device} ({self.device_name}), {self.precision}, {self.to_dict()['layers']}"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed precision for the forward pass (a no-op at fp32)."""
        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.kind, dtype=dtype)

    def grad_scaler(self) -> Any:
        """A gradient scaler for fp16 (whose small gradients underflow), else None."""
        import torch

        return torch.amp.GradScaler(self.kind) if self.precision == "fp16" else None


CPU = Placement()


def _parse(accelerator: str) -> tuple[str, int | None]:
    text = accelerator.strip().lower()
    kind, _, index = text.partition(":")
    if kind not in ("auto", "cpu", "cuda", "mps") or (index and (kind != "cuda" or not index.isdigit())):
        raise UserError(f"--accelerator must be one of {', '.join(ACCELERATORS)}, got {accelerator!r}")
    return kind, int(index) if index else None


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _resolved_kind(accelerator: str) -> tuple[str, int | None]:
    kind, index = _parse(accelerator)
    if kind == "auto":
        return ("cuda", None) if _cuda_count() else ("mps", None) if _mps_available() else ("cpu", None)
    if kind == "cuda":
        count = _cuda_count()
        if count == 0:
            import torch

            built = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
            raise UserError(f"--accelerator {accelerator}: torch {torch.__version__} ({built}) sees no CUDA GPU; "
                            "use --accelerator cpu or auto")
        if index is not None and index >= count:
            raise UserError(f"--accelerator {accelerator}: torch sees {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    if kind == "mps" and not _mps_available():
        raise UserError(f"--accelerator {accelerator}: torch sees no Apple MPS device; use --accelerator cpu or auto")
    return kind, index


def _precision(kind: str, precision: str) -> str:
    if precision not in PRECISIONS:
        raise UserError(f"--train-precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if kind != "cuda":
            return "fp32"  # the CPU path stays as measured; MPS autocast is not tested here
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and kind == "cpu":
        raise UserError("--train-precision fp16 needs a GPU (CPUs train fp16 slowly and without a scaler); use bf16 or fp32")
    return precision


def check_accelerator(accelerator: str, precision: str = "auto") -> str:
    """Validate both options where the command starts: a one-line UserError (exit 2) when the
    device is missing. Returns what ``auto`` means on this machine, e.g. "cuda (bf16)"."""
    kind, index = _resolved_kind(accelerator)
    chosen = _precision(kind, precision)
    return f"{kind}{'' if index is None else f':{index}'} ({chosen})"


def placement(accelerator: str, precision: str = "auto") -> Placement:
    """This process's device and precision; ``cuda`` without an index is the GPU that
    :func:`pin_worker` gave this process (the first one when none did)."""
    kind, index = _resolved_kind(accelerator)
    chosen = _precision(kind, precision)
    if kind == "cpu":
        return Placement("cpu", _cpu_name(), chosen)
    if kind == "mps":
        return Placement("mps", "Apple MPS", chosen)
    import torch

    device = index if index is not None else torch.cuda.current_device()  # as pin_worker set it
    return Placement(f"cuda:{device}", torch.cuda.get_device_name(device), chosen)


def pin_worker(accelerator: str, worker: int, workers: int) -> int | None:
    """Pin worker ``worker`` (0-based) of ``workers`` to GPU ``worker mod count`` and cap it at
    its share of that GPU's memory, so that one trial's allocation cannot starve the others
    on the same GPU. Returns the GPU index (None off CUDA)."""
    kind, index = _resolved_kind(accelerator)
    if kind != "cuda":
        return None
    import torch

    count = _cuda_count()
    gpu_of = [index if index is not None else k % count for k in range(max(1, workers))]
    device = gpu_of[worker % len(gpu_of)]
    torch.cuda.set_device(device)
    sharing = gpu_of.count(device)
    if sharing > 1:
        torch.cuda.set_per_process_memory_fraction(1 / sharing, device)
    return device


def release_memory() -> None:
    """Give a failed trial's GPU memory back (CUDA out of memory fails that trial only)."""
    import gc
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()


def describe_plan(accelerator: str, precision: str, workers: int) -> str:
    """What a search's training will use, for its first lines (no GPU is initialised)."""
    kind, index = _resolved_kind(accelerator)
    chosen = _precision(kind, precision)
    if kind != "cuda":
        fast = Placement(kind, kind, chosen).fast_layers
        layers = "fast CPU layers" if fast else "plain nn.Conv2d(groups) layers"
        if fast:
            from shufflenet_core import fused

            # Built here, once, before any worker starts (the workers then load the library).
            layers += ", fused BatchNorm kernels" if fused.available() else ", PyTorch's BatchNorm ops"
        return f"{kind}, {chosen}, {layers}"
    count = 1 if index is not None else _cuda_count()
    gpus = f"cuda:{index}" if index is not None else f"{count} CUDA GPU(s)"
    return (f"{gpus}, {chosen}, plain nn.Conv2d(groups) layers, up to {-(-max(1, workers) // count)} "
            "worker(s) per GPU with that share of its memory each")


@functools.lru_cache(maxsize=1)
def _cpu_name() -> str:  # read once per process, not per trial
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"
