"""The device registry: which kind a spec opens, the options each kind takes, how a new kind
plugs in, and the layout rules of nas/latency (no import cycles, no probing of devices)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any, Sequence

import pytest

import nas.latency.devices as devices
from nas.errors import UserError
from nas.latency import Device, DeviceUnavailableError, RunSettings, Timing, device_kinds, open_device, register_device

LATENCY = Path(devices.__file__).parent


@pytest.mark.parametrize("spec, kind", [
    ("local", "local"), (" local ", "local"), ("ssh://pi@board:2222", "ssh"), ("pi@board", "ssh"), ("board", "ssh"),
    ("board:2222", "ssh"), ("localhost", "ssh"), ("adbhost", "ssh"), ("ssh", "ssh"), ("adb", "adb"),
    ("adb:emulator-5554", "adb"), ("lut", "lut"),
])
def test_a_spec_opens_the_kind_its_scheme_names(spec, kind):
    device = open_device(spec)
    assert device.kind == kind and type(device) is device_kinds()[kind] and device.spec == spec.strip()


def test_spec_details_reach_the_kind():
    ssh = open_device("ssh://pi@board.local:2222")
    assert (ssh.target.user, ssh.target.host, ssh.target.port) == ("pi", "board.local", 2222)
    assert open_device("adb:emulator-5554").serial == "emulator-5554" and open_device("adb").serial is None


@pytest.mark.parametrize("spec, message", [
    ("", "--device is empty; use adb.*local.*lut.*ssh://"), ("local:x", "takes nothing after"),
    ("lut:table.json", "takes nothing after"), ("ssh://a b", "unusable host"), ("adb:bad serial!", "serial"),
    ("http://board", "is not ssh://"),
])
def test_bad_specs_are_user_errors(spec, message):
    with pytest.raises(UserError, match=message):
        open_device(spec)


def test_each_kind_gets_only_its_options():
    """The CLI passes every kind's options; a kind receives its own, and None means unset."""
    everything = {"known_hosts": "kh", "remote_python": None, "benchmark_binary": "/bin/x", "python": None}
    assert open_device("local", **everything).python_command != "/bin/x"
    ssh = open_device("ssh://board", **everything)
    assert ssh.known_hosts == "kh" and ssh.python_command == "python3"
    assert open_device("adb", **everything).benchmark_binary == "/bin/x"


def test_every_registered_kind_implements_the_whole_interface():
    kinds = device_kinds()
    assert set(kinds) >= {"local", "ssh", "adb", "lut"}
    for scheme, kind in kinds.items():
        assert issubclass(kind, Device) and not inspect.isabstract(kind) and kind.kind == scheme
        assert kind.usage and kind.__module__.startswith("nas.latency.kinds.")  # one module each
    assert [kind.measures for kind in kinds.values()].count(False) == 1  # lut only


def test_a_new_kind_is_one_registered_class(monkeypatch):
    monkeypatch.setattr(devices, "_KINDS", dict(devices._KINDS))

    @register_device("fakeboard")
    class FakeBoard(Device):
        usage = "fakeboard:NAME"
        OPTIONS = frozenset({"speed"})

        def __init__(self, spec: str, *, name: str, speed: float = 1.0) -> None:
            super().__init__(spec)
            self.name, self.speed = name, speed

        @classmethod
        def from_spec(cls, spec: str, **options: Any) -> "FakeBoard":
            return cls(spec, name=spec.partition(":")[2], **options)

        def _probe(self) -> dict[str, Any]:
            return {"arch": "fake", "onnxruntime": "1.0"}

        def measure(self, models: Sequence[Path], settings: RunSettings, *, input_file: Path | None = None) -> list[Timing]:
            return [Timing(Path(model).name, (self.speed,) * settings.runs) for model in models]

    board = open_device("fakeboard:bench-3", speed=2.0, known_hosts="ignored")
    assert isinstance(board, FakeBoard) and board.name == "bench-3" and board.speed == 2.0
    assert board.probe() == {"spec": "fakeboard:bench-3", "kind": "fakeboard", "arch": "fake", "onnxruntime": "1.0"}
    assert board.measure([Path("m.onnx")], RunSettings(runs=3))[0].stats.median_ms == 2.0
    assert "fakeboard:NAME" in str(pytest.raises(UserError, open_device, "").value)
    with pytest.raises(ValueError, match="taken"):
        register_device("ssh")(FakeBoard)
    with pytest.raises(ValueError, match="default"):
        register_device("other", default=True)(FakeBoard)
    with pytest.raises(ValueError, match="scheme"):
        register_device("Bad Scheme")


def test_the_lut_device_times_nothing():
    device = open_device("lut")
    assert not device.measures
    with pytest.raises(DeviceUnavailableError, match="lookup table.*--lut"):
        device.probe()
    with pytest.raises(DeviceUnavailableError, match="--lut"):
        device.measure([Path("m.onnx")], RunSettings())


def _imports(path: Path, package: str) -> set[str]:
    """Modules of nas a file imports, at any depth (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("nas")}


def test_latency_modules_import_no_cycle():
    modules = {}
    for path in LATENCY.rglob("*.py"):
        parts = ("nas", *path.relative_to(LATENCY.parent).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = {other for other in _imports(path, package) if other in modules and other != name}
    graph["nas.latency.kinds"] |= {name for name in modules if name.startswith("nas.latency.kinds.")}  # imported by name

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(step == goal or (step not in seen and not seen.add(step) and reaches(step, goal, seen))
                   for step in graph[start])

    assert not [name for name in graph if reaches(name, name, set())]
    assert graph["nas.latency.devices"] == {"nas.latency.errors", "nas.latency.timing"}  # no kind


def test_no_module_probes_a_device_with_hasattr_or_getattr():
    users = [*LATENCY.rglob("*.py"), LATENCY.parent / "commands" / "latency.py"]
    probing = [f"{path.name}:{node.lineno}" for path in users if path.name != "runner.py"
               for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr")]
    assert probing == []
