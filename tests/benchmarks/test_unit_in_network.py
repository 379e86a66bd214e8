"""benchmarks/unit_in_network.py finds every unit's nodes in the network's profile."""

from __future__ import annotations

import pytest

from shufflenet_core import ShuffleNetConfig
from shufflenet_core.structure import unit_specs
from tests.benchmarks.loading import load_benchmark

pytest.importorskip("onnxruntime")


def test_every_unit_has_kernel_time_inside_the_network_and_alone(tmp_path) -> None:
    config = ShuffleNetConfig.from_width(3, 0.25, stage_depths=(2, 1, 1), num_classes=10, input_size=64)
    rows = load_benchmark("unit_in_network").compare(config, runs=3, folder=tmp_path)
    assert len(rows) == len(list(unit_specs(config))) == 4
    assert all(inside > 0 and alone > 0 for _, inside, alone, _ in rows), rows  # node names mapped to units
    assert [name.split(" (")[0] for name, _, _, _ in rows] == ["stage 2 unit 0", "stage 2 unit 1", "stage 3 unit 0",
                                                                "stage 4 unit 0"]
    # 10-20 channels per group of 3: no CPU's blocked layout takes them, so the later units' pointwise
    # convolutions run unblocked (where onnx is installed to read the optimized graph).
    if pytest.importorskip("onnx"):
        assert all(unblocked > 0 for *_, unblocked in rows[2:]), rows


def test_the_network_can_be_profiled_without_its_classifier(tmp_path) -> None:
    config = ShuffleNetConfig.from_width(3, 0.25, stage_depths=(1, 1, 1), num_classes=10, input_size=64)
    onnx = pytest.importorskip("onnx")
    benchmark = load_benchmark("unit_in_network")
    for classifier in (True, False):
        rows = benchmark.compare(config, runs=3, folder=tmp_path, classifier=classifier)
        assert len(rows) == 3 and all(inside > 0 for _, inside, _, _ in rows), rows
        ops = {node.op_type for node in onnx.load(tmp_path / "network.onnx").graph.node}
        assert bool(ops & {"Gemm", "MatMul"}) == classifier, ops
