"""The presets reproduce the paper and the official code to the digit (shared/REFERENCE.md)."""

from __future__ import annotations

import pytest

from shufflenet_core import PRESETS, build_model, complexity, get_preset

from .counting import hook_count, parameter_count

# REFERENCE.md: measured on the official code at 224x224 (conv + FC MACs; params incl. BN affine).
OFFICIAL = {
    "shufflenet_v1_0.5x_g3": (37.590, 0.7173),
    "shufflenet_v1_1.0x_g3": (137.461, 1.8647),
    "shufflenet_v1_1.5x_g3": (292.444, 3.4412),
    "shufflenet_v1_2.0x_g3": (524.045, 5.4498),
    "shufflenet_v1_0.5x_g8": (40.470, 1.0104),
    "shufflenet_v1_1.0x_g8": (138.366, 2.4338),
    "shufflenet_v1_1.5x_g8": (290.189, 4.2690),
    "shufflenet_v1_2.0x_g8": (521.942, 6.5212),
}
OFFICIAL_STEMS = {
    "shufflenet_v1_0.5x_g3": 12, "shufflenet_v1_1.0x_g3": 24, "shufflenet_v1_1.5x_g3": 24,
    "shufflenet_v1_2.0x_g3": 48, "shufflenet_v1_0.5x_g8": 16, "shufflenet_v1_1.0x_g8": 24,
    "shufflenet_v1_1.5x_g8": 24, "shufflenet_v1_2.0x_g8": 48,
}
# Paper Table 1, complexity at 1x in MFLOPs (conv layers only).
TABLE1 = {1: 143, 2: 140, 3: 137, 4: 133, 8: 137}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_models_from_config(name: str) -> None:
    mflops, mparams = OFFICIAL[name]
    cost = complexity(get_preset(name))
    assert round(cost.macs / 1e6, 3) == mflops
    assert round(cost.params / 1e6, 4) == mparams
    assert get_preset(name).stem_channels == OFFICIAL_STEMS[name]


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_models_counted_on_built_model(name: str) -> None:
    mflops, mparams = OFFICIAL[name]
    model = build_model(get_preset(name))
    counted = hook_count(model, 224)
    assert round(sum(counted.values()) / 1e6, 3) == mflops
    assert round(parameter_count(model) / 1e6, 4) == mparams


@pytest.mark.parametrize("groups", sorted(TABLE1))
def test_paper_table1_conv_mflops(groups: int) -> None:
    cost = complexity(get_preset(f"shufflenet_v1_1.0x_g{groups}"))
    assert abs(cost.conv_macs / 1e6 - TABLE1[groups]) <= 1.0
    # The FC layer is what separates the two conventions.
    assert cost.macs - cost.conv_macs == cost.layers[-1].macs == get_preset(f"shufflenet_v1_1.0x_g{groups}").stage_out_channels[-1] * 1000


def test_paper_table1_channels() -> None:
    expected = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960), 4: (272, 544, 1088), 8: (384, 768, 1536)}
    for groups, channels in expected.items():
        config = get_preset(f"shufflenet_v1_1.0x_g{groups}")
        assert config.stage_out_channels == channels
        assert config.stage_bottleneck_channels() == tuple(c // 4 for c in channels)


def test_every_preset_builds_and_matches_its_complexity() -> None:
    for name, preset in PRESETS.items():
        config = preset.config.replace(input_size=64, num_classes=10)
        model = build_model(config)
        assert sum(hook_count(model, 64).values()) == complexity(config).macs, name
        assert parameter_count(model) == complexity(config).params, name
