"""float32 vs int8, ONNX Runtime vs ExecuTorch: latency of the paper's presets and what int8 costs.

For each of the 8 official presets (and, with --storage/--study, the study's answer): the
latency at batch 1, 224x224, 1 thread on this machine in ONNX Runtime and ExecuTorch (XNNPACK),
each in float32 and int8, measured side by side in one run (interleaved rounds, CPU-time
clock) so that ratios are fair on a shared machine. With --accuracy, each config is also
trained with the default proxy recipe (1 epoch, 10k Fashion-MNIST images at 32 px) and its
test accuracy measured in all four forms, so the int8 drop is visible.

    .venv/bin/python benchmarks/int8.py [--accuracy] [--runs 30] [--storage runs/shufflenas.db --study NAME]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from shufflenet_core import ShuffleNetConfig

FORMS = (("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("executorch", "fp32"), ("executorch", "int8"))
OFFICIAL = ("shufflenet_v1_0.5x_g3", "shufflenet_v1_0.5x_g8", "shufflenet_v1_1.0x_g3", "shufflenet_v1_1.0x_g8",
            "shufflenet_v1_1.5x_g3", "shufflenet_v1_1.5x_g8", "shufflenet_v1_2.0x_g3", "shufflenet_v1_2.0x_g8")


def _configs(args: argparse.Namespace) -> list[tuple[str, ShuffleNetConfig]]:
    from shufflenet_core import get_preset

    configs: list[tuple[str, ShuffleNetConfig]] = [(name, get_preset(name)) for name in OFFICIAL]
    if args.study:
        from nas.records import load_records, study_info
        from nas.results import choose_best
        from nas.storage import load_study, open_storage

        study = load_study(open_storage(args.storage, create=False), args.study)
        chosen = choose_best(load_records(study), study_info(study)).record
        if chosen is None or chosen.config is None:
            raise SystemExit(f"study {args.study!r} has no answer to benchmark")
        configs.append((f"{args.study} trial {chosen.number}", chosen.config.replace(num_classes=1000, in_channels=3,
                                                                                     input_size=224)))
    return configs


def _latencies(configs: list[tuple[str, ShuffleNetConfig]], runs: int) -> dict[tuple[str, str, str], float]:
    from nas.latency import open_device
    from nas.latency.measure import export_for_runtime
    from nas.latency.timing import RunSettings, summarize

    device = open_device("local")
    files: list[Path] = []
    names: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="int8-bench-") as scratch:
        for label, config in configs:
            for runtime, precision in FORMS:
                folder = Path(scratch) / f"{len(files)}"
                folder.mkdir()
                path = export_for_runtime(config, folder, runtime, precision)
                files.append(path.rename(folder / f"m{len(files)}{path.suffix}"))  # the device wants distinct names
                names.append((label, runtime, precision))
        timings = device.measure(files, RunSettings(threads=1, runs=runs, warmup=5, rounds=5, clock="cpu"))
    return {name: summarize(timing.times_ms).median_ms for name, timing in zip(names, timings, strict=True)}


def _accuracies(configs: list[tuple[str, ShuffleNetConfig]]) -> dict[tuple[str, str, str], float]:
    import torch

    from nas.evaluation.data import load_data
    from nas.evaluation.proxy import DEFAULT_RECIPE
    from nas.evaluation.training import prepare_data, train_config
    from nas.export.executorch import executorch_logits, write_executorch
    from nas.export.quantize import CALIBRATION_IMAGES, images_for, onnx_logits, quantize_onnx
    from shufflenet_core.onnx_export import export_onnx

    data = prepare_data(load_data("fashion-mnist"), DEFAULT_RECIPE)
    test = images_for("fashion-mnist", 32, "test")
    calibration = images_for("fashion-mnist", 32, "train", CALIBRATION_IMAGES)
    found = {}
    for label, config in configs:
        model = train_config(config, data, DEFAULT_RECIPE, seed=0).model.eval()
        with tempfile.TemporaryDirectory(prefix="int8-acc-") as scratch:
            folder = Path(scratch)
            export_onnx(model, folder / "m.onnx", exporter="legacy", dynamic_batch=True, dynamic_spatial=True)
            quantize_onnx(folder / "m.onnx", folder / "m8.onnx", calibration)
            example = torch.from_numpy(test.images[:1])
            write_executorch(model, folder / "m.pte", example)
            write_executorch(model, folder / "m8.pte", example, calibration=calibration.images)
            predictions = {
                ("onnxruntime", "fp32"): onnx_logits(folder / "m.onnx", test.images),
                ("onnxruntime", "int8"): onnx_logits(folder / "m8.onnx", test.images),
                ("executorch", "fp32"): executorch_logits(folder / "m.pte", test.images),
                ("executorch", "int8"): executorch_logits(folder / "m8.pte", test.images),
            }
        for (runtime, precision), logits in predictions.items():
            found[(label, runtime, precision)] = float((logits.argmax(1) == test.labels).mean())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="timed runs per model (in 5 interleaved rounds)")
    parser.add_argument("--accuracy", action="store_true", help="also train each config and measure the int8 drop")
    parser.add_argument("--storage", default=None, help="storage of --study")
    parser.add_argument("--study", default=None, help="add this study's answer (nas.results.choose_best)")
    args = parser.parse_args()

    configs = _configs(args)
    latency = _latencies(configs, args.runs)
    accuracy = _accuracies(configs) if args.accuracy else {}
    header = "| config | ORT fp32 ms | ORT int8 ms | ET fp32 ms | ET int8 ms | int8/fp32 ORT | int8/fp32 ET |"
    if accuracy:
        header += " top-1 fp32 | ORT int8 | ET int8 |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for label, _ in configs:
        ms = [latency[(label, runtime, precision)] for runtime, precision in FORMS]
        row = f"| {label} | " + " | ".join(f"{value:.2f}" for value in ms) + f" | {ms[1] / ms[0]:.2f}x | {ms[3] / ms[2]:.2f}x |"
        if accuracy:
            row += " " + " | ".join(f"{100 * accuracy[(label, r, p)]:.2f}" for r, p in
                                    (("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("executorch", "int8"))) + " |"
        print(row)
    for runtime, precision in FORMS:
        fastest = min(configs, key=lambda item: latency[(item[0], runtime, precision)])[0]
        print(f"fastest in {runtime} {precision}: {fastest}")


if __name__ == "__main__":
    main()
