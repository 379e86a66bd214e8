"""The script that runs ON the device: probe it, or time models: ONNX files with ONNX
Runtime, ExecuTorch programs (``.pte``) with ExecuTorch's Python runtime (which imports torch:
a board without torch runs a cross-built ``executor_runner`` instead, see the README).

Self-contained on purpose (standard library + numpy + onnxruntime, and onnx where present for
``--layout``; Python >= 3.7): it is uploaded as one file next to the models and run by the
device's own ``python3``. It prints one JSON object on stdout; a missing runtime is a JSON
error with exit code 3, so the host can say how to install it instead of showing a traceback.

    python3 runner.py probe
    python3 runner.py measure [--threads 1] [--warmup 10] [--runs 50] [--rounds 1]
                              [--clock wall|cpu]
                              [--outputs] [--layout] [--input X.npy] MODEL.onnx|MODEL.pte [...]

``--clock cpu`` times each run by the calling thread's CPU time (CLOCK_THREAD_CPUTIME_ID):
with one intra-op thread ONNX Runtime computes on that thread, so this equals wall time on an
idle device and leaves out the time a busy, shared machine gives to other processes.
``--layout`` adds, per ONNX model, the weights of the convolutions ONNX Runtime runs outside
its blocked (NCHWc) layout on this device (``unblocked_conv_params``; needs the ``onnx``
package there, else it is left out): inside a network whose weights outgrow the cache, units
with such convolutions slow down far more, against the same unit timed alone, than blocked
ones (see nas/latency/lut.py).
``--rounds R`` splits the runs of several models into R interleaved rounds, so a burst of load
on a shared machine spreads over all models instead of hitting one.
"""

import argparse
import json
import os
import platform
import sys
import time

MISSING_RUNTIME_EXIT = 3


def _cpu_model():
    """The CPU's marketing name, from /proc/cpuinfo where there is one."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key and key not in fields and value.strip():
                    fields[key] = value.strip()
    except OSError:
        pass
    for key in ("model name", "hardware", "cpu model", "processor"):
        if key in fields and not fields[key].isdigit():
            return fields[key]
    if "cpu part" in fields:
        return "ARM implementer {} part {}".format(fields.get("cpu implementer", "?"), fields["cpu part"])
    return platform.processor() or platform.machine()


def _version(module_name):
    try:
        module = __import__(module_name)
    except Exception:  # a broken install is as good as none for us
        return None
    version = getattr(module, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as installed_version

            version = installed_version(module_name)
        except Exception:
            version = "unknown"
    return version


def probe():
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "arch": platform.machine(),
        "system": platform.system(),
        "hostname": platform.node(),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": affinity,
        "python": platform.python_version(),
        "onnxruntime": _version("onnxruntime"),
        "executorch": _version("executorch"),
        "numpy": _version("numpy"),
    }


def session_options(ort, threads):
    """The ONNX Runtime settings every model is timed with (benchmarks/unit_in_network.py
    profiles under the same ones)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


BLOCKED_DOMAIN = "com.microsoft.nchwc"
"""The ONNX domain of the operators ONNX Runtime's NCHWc transformer puts in a graph."""


def unblocked_conv_params(ort, path, threads):
    """Weights of the convolutions of the model at ``path`` that ONNX Runtime, as optimized
    for this device, leaves outside its blocked layout; None without the ``onnx`` package."""
    try:
        import onnx
    except ImportError:
        return None
    import tempfile

    options = session_options(ort, threads)
    options.log_severity_level = 3  # the optimized model is for this device only: we know
    with tempfile.TemporaryDirectory(prefix="runner-layout-") as folder:
        options.optimized_model_filepath = os.path.join(folder, "optimized.onnx")
        ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    sizes = {tensor.name: _product(tensor.dims) for tensor in graph.initializer}
    return sum(sizes.get(node.input[1], 0) for node in graph.node
               if node.op_type in ("Conv", "FusedConv") and node.domain != BLOCKED_DOMAIN and len(node.input) > 1)


def _product(dims):
    count = 1
    for dim in dims:
        count *= dim
    return count


def _session(ort, path, threads):
    return ort.InferenceSession(path, session_options(ort, threads), providers=["CPUExecutionProvider"])


def _input_for(np, session, input_file):
    meta = session.get_inputs()[0]
    if input_file:
        return meta.name, np.load(input_file).astype(np.float32)
    shape = [dim if isinstance(dim, int) and dim > 0 else 1 for dim in meta.shape]
    return meta.name, np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _bound_call(ort, np, session, input_name, array):
    """A run with input and output bound once: no per-run copy of the output into numpy, which
    for a lone unit with a large feature map would cost more than a network pays for it."""
    binding = session.io_binding()
    binding.bind_cpu_input(input_name, array)
    for output in session.get_outputs():
        shape = output.shape
        if all(isinstance(dim, int) and dim > 0 for dim in shape):
            value = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32)
            binding.bind_ortvalue_output(output.name, value)
        else:
            binding.bind_output(output.name, "cpu")

    def call():
        session.run_with_iobinding(binding)

    return call


def _onnx_output(session, feed):
    def output():
        return session.run(None, feed)[0]

    return output


def _executorch_model(np, path, threads, input_file):
    """A .pte program's timed call and its output, in ExecuTorch's Python runtime."""
    import torch
    from executorch.runtime import Runtime

    try:  # XNNPACK's thread pool: ExecuTorch has no public setter for its size in Python
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(threads)
    except (ImportError, AttributeError):
        pass
    method = Runtime.get().load_program(path).load_method("forward")
    sizes = list(method.metadata.input_tensor_meta(0).sizes())
    if input_file:
        array = np.load(input_file).astype(np.float32)
    else:
        array = np.random.default_rng(0).standard_normal(sizes).astype(np.float32)
    tensor = torch.from_numpy(array)
    return (lambda: method.execute([tensor])), (lambda: method.execute([tensor])[0].numpy())


def round_sizes(runs, rounds):
    """How many of ``runs`` timed runs each of the ``rounds`` interleaved rounds holds (the
    times of a model are reported round after round in this order)."""
    rounds = max(1, min(rounds, runs))
    return [runs // rounds + (1 if index < runs % rounds else 0) for index in range(rounds)]


def measure(args):
    try:
        import numpy as np

        if any(not path.endswith(".pte") for path in args.models):
            import onnxruntime as ort
        if any(path.endswith(".pte") for path in args.models):
            import executorch.runtime  # noqa: F401
    except ImportError as error:
        print(json.dumps({"error": "missing_runtime", "detail": str(error), "probe": probe()}))
        sys.exit(MISSING_RUNTIME_EXIT)
    models = []
    for path in args.models:
        if path.endswith(".pte"):
            call, output = _executorch_model(np, path, args.threads, args.input)
        else:
            session = _session(ort, path, args.threads)
            name, array = _input_for(np, session, args.input)
            call = _bound_call(ort, np, session, name, array)
            output = _onnx_output(session, {name: array})
        layout = None
        if args.layout and not path.endswith(".pte"):
            layout = unblocked_conv_params(ort, path, args.threads)
        for _ in range(args.warmup):
            call()
        models.append({"path": path, "output": output, "call": call, "times": [], "layout": layout})
    per_round = round_sizes(args.runs, args.rounds)
    clock = time.thread_time_ns if args.clock == "cpu" else time.perf_counter_ns
    for count in per_round:
        for model in models:
            call, times = model["call"], model["times"]
            call()  # re-warm caches after the other models ran
            for _ in range(count):
                start = clock()
                call()
                times.append((clock() - start) / 1e6)
    results = []
    for model in models:
        entry = {"model": os.path.basename(model["path"]), "times_ms": model["times"]}
        if model["layout"] is not None:
            entry["unblocked_conv_params"] = model["layout"]
        if args.outputs:
            output = model["output"]()
            entry["output_shape"] = list(output.shape)
            entry["output"] = [float(value) for value in output.reshape(-1)]
        results.append(entry)
    return {"results": results, "threads": args.threads, "warmup": args.warmup, "runs": args.runs,
            "clock": args.clock, "onnxruntime": _version("onnxruntime"), "executorch": _version("executorch")}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="runner.py")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("probe")
    timed = commands.add_parser("measure")
    timed.add_argument("--threads", type=int, default=1)
    timed.add_argument("--warmup", type=int, default=10)
    timed.add_argument("--runs", type=int, default=50)
    timed.add_argument("--rounds", type=int, default=1)
    timed.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    timed.add_argument("--outputs", action="store_true")
    timed.add_argument("--layout", action="store_true")
    timed.add_argument("--input", default=None)
    timed.add_argument("models", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "probe":
        print(json.dumps(probe()))
    elif args.command == "measure":
        print(json.dumps(measure(args)))
    else:
        parser.error("say 'probe' or 'measure'")


if __name__ == "__main__":
    main()
