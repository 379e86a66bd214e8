"""Config construction, quantization, validation messages and the JSON round trip."""

from __future__ import annotations

import json

import pytest

from shufflenet_core import PRESETS, ShuffleNetConfig, get_preset
from shufflenet_core.config import CONFIG_SCHEMA_VERSION, bottleneck_channels, quantize_channels


def test_quantize_rounds_to_nearest_multiple_at_least_one() -> None:
    assert quantize_channels(100, 8) == 104
    assert quantize_channels(99.9, 8) == 96
    assert quantize_channels(2, 8) == 8
    assert quantize_channels(12, 8) == 16  # halves round up


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("width", [0.1, 0.25, 0.33, 0.5, 0.77, 1.0, 1.25, 2.0, 3.1])
@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.3, 0.5, 1.0])
def test_from_width_always_divides(groups: int, width: float, ratio: float) -> None:
    config = ShuffleNetConfig.from_width(groups, width, bottleneck_ratio=ratio)
    for mid, out in zip(config.stage_bottleneck_channels(), config.stage_out_channels):
        assert mid % groups == 0 and out % groups == 0 and mid > 0
    assert config.stem_channels % groups == 0


def test_channel_multiple_is_respected() -> None:
    config = ShuffleNetConfig.from_width(3, 0.8, channel_multiple=8)
    assert all(c % 24 == 0 for c in config.stage_out_channels)


def test_bottleneck_rule_matches_official_floor_division_for_presets() -> None:
    for preset in PRESETS.values():
        for out in preset.config.stage_out_channels:
            if out // 4 % preset.groups == 0:
                assert bottleneck_channels(out, 0.25, preset.groups) == out // 4


def test_json_round_trip_and_schema() -> None:
    config = ShuffleNetConfig.from_width(8, 0.5, stage_depths=(2, 3), bottleneck_ratio=0.5, channel_shuffle=False)
    text = config.to_json()
    assert json.loads(text)["schema_version"] == CONFIG_SCHEMA_VERSION
    assert ShuffleNetConfig.from_json(text) == config
    assert ShuffleNetConfig.from_dict(json.loads(get_preset("shufflenet_v1_1.0x_g3").to_json())) == get_preset(
        "shufflenet_v1_1.0x_g3"
    )


@pytest.mark.parametrize(
    "payload, message",
    [
        ('{"groups": 3}', "missing required field"),
        ('{"groups": 3, "stage_out_channels": [240], "stage_depths": [4], "colour": 1}', "unknown config field"),
        ('{"groups": 3, "stage_out_channels": [240], "stage_depths": [4], "schema_version": 99}', "schema_version 99"),
        ("[1, 2]", "must be a JSON object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_json_is_a_clear_value_error(payload: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ShuffleNetConfig.from_json(payload)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(groups=0, stage_out_channels=(240,), stage_depths=(4,)), "groups must be >= 1"),
        (dict(groups=3, stage_out_channels=(241, 480, 960)), "stage 2 outputs 241 channels, not a multiple of groups=3; use 240"),
        (dict(groups=3, stage_out_channels=(240, 480)), "stage_out_channels has 2 entries but stage_depths has 3"),
        (dict(groups=8, stage_out_channels=(384, 768, 1536), stem_channels=12), "branch of 384 - 12 = 372"),
        (dict(groups=3, stage_out_channels=(24, 48, 96), stem_channels=24), "branch of 24 - 24 = 0"),
        (dict(groups=3, stage_out_channels=(240, 480, 960), stage_depths=(4, 0, 4)), "stage 3 depth must be >= 1"),
        (dict(groups=3, stage_out_channels=(240, 480, 960), bottleneck_ratio=0), "bottleneck_ratio must be in"),
        (dict(groups=3, stage_out_channels=(240, 480, 960), input_size=16), "input_size must be >= 32"),
        (dict(groups=3, stage_out_channels=(240, 480, 960), stage_depths="448"), "must be a sequence"),
        (dict(groups=3, stage_out_channels=(240.5, 480, 960)), "must hold integers"),
        (dict(groups=3, stage_out_channels=(), stage_depths=()), "at least one stage"),
        (dict(groups=2, stage_out_channels=(200, 400, 800), stem_channels=23, group_first_pointwise=True), "group_first_pointwise needs"),
    ],
)
def test_invalid_configs_say_what_to_change(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ShuffleNetConfig(**kwargs)


def test_from_width_rejects_unknown_groups_and_bad_width() -> None:
    with pytest.raises(ValueError, match="groups=5 has no paper channel table; use one of 1, 2, 3, 4, 8"):
        ShuffleNetConfig.from_width(5, 1.0)
    with pytest.raises(ValueError, match="width must be > 0"):
        ShuffleNetConfig.from_width(3, 0)


def test_config_is_frozen_hashable_and_replace_checks_names() -> None:
    config = get_preset("shufflenet_v1_1.0x_g3")
    with pytest.raises(Exception):
        config.groups = 4  # type: ignore[misc]
    assert hash(config) == hash(config.replace())
    assert config.replace(num_classes=10).num_classes == 10
    with pytest.raises(ValueError, match="unknown config field"):
        config.replace(widht=2)
    lists = ShuffleNetConfig(groups=3, stage_out_channels=[240, 480, 960], stage_depths=[4, 8, 4])
    assert lists == config


def test_unknown_preset_suggests_names() -> None:
    with pytest.raises(ValueError, match="did you mean shufflenet_v1_1.0x_g3"):
        get_preset("1.0x_g3")
