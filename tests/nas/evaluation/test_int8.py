"""int8 accuracy of a trained candidate (``nas search --precision int8``): real training, real
quantization in each runtime's own way, real validation images."""

from __future__ import annotations

import pytest

from nas.evaluation.base import EvaluatorOptions, create_evaluator
from nas.evaluation.data import load_data
from nas.evaluation.int8 import INT8_RUNTIMES, int8_accuracy, int8_scheme
from nas.evaluation.training import Recipe, prepare_data, train_config
from shufflenet_core import get_preset

RECIPE = Recipe(epochs=3, train_size=3000, val_size=500, resolution=32)


@pytest.fixture(scope="module")
def trained():
    data = prepare_data(load_data(), RECIPE)
    result = train_config(get_preset("shufflenet_v1_0.5x_g3"), data, RECIPE, seed=0)
    assert result.accuracy > 0.5
    return result, data


@pytest.mark.parametrize("runtime", sorted(INT8_RUNTIMES))
def test_int8_keeps_the_trained_models_answers(trained, runtime):
    result, data = trained
    if runtime == "executorch":
        pytest.importorskip("executorch.exir")
    int8 = int8_accuracy(result.model.config, result.model.state_dict(), data, runtime)
    # The float32 reference is the trained model itself, on the same validation images.
    assert int8.fp32_accuracy == pytest.approx(result.accuracy, abs=1e-9)
    assert int8.agreement >= 0.95, int8
    assert abs(int8.accuracy - int8.fp32_accuracy) <= 0.03, int8


def test_int8_is_measured_on_the_models_own_weights_not_fresh_ones(trained):
    """An untrained network of the same shape scores near chance: the quantized model really
    carries the trained weights."""
    result, data = trained
    from shufflenet_core import build_model

    fresh = build_model(result.model.config).state_dict()
    assert int8_accuracy(result.model.config, fresh, data, "onnxruntime").accuracy < 0.3


def test_the_proxy_evaluator_reports_int8_beside_float32_when_asked():
    options = EvaluatorOptions(data_spec="fashion-mnist", recipe=Recipe(epochs=1, train_size=600, val_size=300),
                               int8_runtime="onnxruntime")
    evaluation = create_evaluator("proxy", options).evaluate(get_preset("shufflenet_v1_0.25x_g3"))
    assert evaluation.int8 is not None and set(evaluation.int8) == {"accuracy", "agreement", "fp32_accuracy", "seconds"}
    assert evaluation.int8["fp32_accuracy"] == pytest.approx(evaluation.score, abs=1e-9)
    plain = create_evaluator("proxy", EvaluatorOptions(data_spec="fashion-mnist", recipe=options.recipe))
    assert plain.evaluate(get_preset("shufflenet_v1_0.25x_g3")).int8 is None
    # The study records how: runtime, calibration images from the training split, the scheme.
    scheme = int8_scheme("onnxruntime")
    assert scheme["calibration_split"] == "train" and scheme["calibration_images"] == 256
    assert "per channel" in scheme["weights"]
