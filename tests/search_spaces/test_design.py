"""The space-filling start: corners covered, knobs balanced, seeded, usable by ``suggest``."""

from __future__ import annotations

from collections import Counter

import optuna
import pytest

from search_spaces import DesignSpace, sample_configs, start_design, suggest
from shufflenet_core import complexity

DEPTH_KEYS = ("depth_stage2", "depth_stage3", "depth_stage4")


def depths(knobs: dict) -> tuple[int, ...]:
    return tuple(knobs[key] for key in DEPTH_KEYS)


@pytest.mark.parametrize("count", [2, 4, 10, 13])
def test_design_reaches_both_depth_corners_and_balances_every_knob(count: int) -> None:
    space = DesignSpace()
    design = start_design(space, count, seed=3)
    assert len(design) == count
    assert (2, 4, 2) in [depths(k) for k in design]  # every stage at its minimum: the shallow, wide corner
    assert (6, 12, 6) in [depths(k) for k in design]  # every stage at its maximum
    for key, choices in (("groups", space.groups), ("bottleneck_ratio", space.bottleneck_ratios),
                         ("stem_channels", space.stem_channels)):
        counts = Counter(k[key] for k in design)
        assert set(counts) <= set(choices)
        expected = count / len(choices)
        assert all(int(expected) <= counts.get(c, 0) <= int(expected) + 1 for c in choices), (key, counts)


def test_random_start_rarely_reaches_the_shallow_corner_the_design_always_does() -> None:
    """Why the design exists: independent per-stage depths pile the total up in the middle."""
    space = DesignSpace()
    random_totals = [sum(config.stage_depths) for config, _ in sample_configs(space, 140_000_000, 10, seed=0)]
    design_totals = [sum(depths(k)) for k in start_design(space, 10, seed=0)]
    assert min(design_totals) == 8 and max(design_totals) == 24
    assert min(design_totals) < min(random_totals) and max(design_totals) > max(random_totals)


def test_same_seed_same_design_other_seed_other_pairing() -> None:
    space = DesignSpace()
    assert start_design(space, 10, seed=5) == start_design(space, 10, seed=5)
    assert start_design(space, 10, seed=5) != start_design(space, 10, seed=6)
    assert start_design(space, 0, seed=5) == []


def test_design_follows_a_custom_space_and_feeds_suggest() -> None:
    space = DesignSpace(groups=(3, 8), bottleneck_ratios=(0.25,), stage_depths=((1, 3), (2, 2)), stem_channels=(24,),
                        channel_shuffle=(True, False), input_size=160)
    design = start_design(space, 6, seed=0)
    assert len(design) == len({str(sorted(k.items())) for k in design})  # distinct settings
    assert {k["channel_shuffle"] for k in design} == {True, False}
    assert {(k["depth_stage2"], k["depth_stage3"]) for k in design} >= {(1, 2), (3, 2)}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for knobs in design:
        study.enqueue_trial(knobs)
    for knobs in design:
        trial = study.ask()
        config = suggest(trial, space, 120_000_000)
        assert config.groups == knobs["groups"] and config.stage_depths == (knobs["depth_stage2"], knobs["depth_stage3"])
        assert config.channel_shuffle == knobs["channel_shuffle"] and complexity(config).macs <= 120_000_000
