"""The design space: budget-solved width, define-by-run suggest, files, validation."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from nas.budget import parse_budget
from search_spaces import DesignSpace, SpaceFileError, load_space, sample_configs, solve_width, suggest, width_grid
from shufflenet_core import complexity


@pytest.mark.parametrize("budget", ["40M", "140M", "524M"])
def test_samples_fill_at_least_90_percent_of_the_budget(budget: str) -> None:
    macs = parse_budget(budget)
    space = DesignSpace()
    fills = []
    for config, _ in sample_configs(space, macs, 150, seed=7):
        used = complexity(config).macs
        narrowest = solve_width(space, 1, groups=config.groups, bottleneck_ratio=config.bottleneck_ratio,
                                stage_depths=config.stage_depths, stem_channels=config.stem_channels)
        if complexity(narrowest).macs > macs:
            continue  # even the narrowest width of these knobs is over budget: infeasible by design
        assert used <= macs
        fills.append(used / macs)
    assert len(fills) >= 100
    assert np.mean(np.array(fills) >= 0.9) >= 0.95
    assert np.median(fills) >= 0.97


def test_solved_width_is_the_largest_that_fits() -> None:
    space = DesignSpace()
    budget = parse_budget("140M")
    for groups in space.groups:
        config = solve_width(space, budget, groups=groups, bottleneck_ratio=0.25, stage_depths=(4, 8, 4), stem_channels=24)
        assert complexity(config).macs <= budget
        quantum = groups
        wider = config.replace(stage_out_channels=tuple(c + quantum * 2**i for i, c in enumerate(config.stage_out_channels)))
        assert complexity(wider).macs > budget
        k_min, k_max = width_grid(space, groups)
        assert k_min * quantum <= config.stage_out_channels[0] <= k_max * quantum


def test_solve_width_reproduces_paper_width_near_its_budget() -> None:
    # 1x g3 is 137.461M: at exactly that budget the solver must land on 240 channels.
    config = solve_width(DesignSpace(), 137_461_024, groups=3, bottleneck_ratio=0.25, stage_depths=(4, 8, 4), stem_channels=24)
    assert config.stage_out_channels == (240, 480, 960)


def test_narrowest_config_returned_when_nothing_fits() -> None:
    space = DesignSpace()
    config = solve_width(space, 1_000_000, groups=8, bottleneck_ratio=0.5, stage_depths=(6, 12, 6), stem_channels=48)
    assert complexity(config).macs > 1_000_000
    assert config.stage_out_channels[0] == width_grid(space, 8)[0] * 8


def test_same_seed_same_samples_and_optuna_suggest() -> None:
    space = DesignSpace()
    first = [c for c, _ in sample_configs(space, parse_budget("40M"), 20, seed=3)]
    again = [c for c, _ in sample_configs(space, parse_budget("40M"), 20, seed=3)]
    other = [c for c, _ in sample_configs(space, parse_budget("40M"), 20, seed=4)]
    assert first == again and first != other
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    config = suggest(trial, space, parse_budget("140M"))
    assert set(trial.params) == {"groups", "bottleneck_ratio", "depth_stage2", "depth_stage3", "depth_stage4", "stem_channels"}
    assert config.groups == trial.params["groups"]


def test_space_round_trips_and_describes_itself() -> None:
    space = DesignSpace(groups=(3, 8), channel_shuffle=(True, False))
    assert DesignSpace.from_dict(json.loads(space.to_json())) == space
    assert "groups [3, 8]" in space.describe()


@pytest.mark.parametrize(
    "suffix, text",
    [
        (".yaml", "groups: [3, 8]\nwidth: [0.5, 2.0]\nstage_depths: [[2, 4], [4, 8], [2, 4]]\n"),
        (".toml", "groups = [3, 8]\nwidth = [0.5, 2.0]\nstage_depths = [[2, 4], [4, 8], [2, 4]]\n"),
        (".json", '{"groups": [3, 8], "width": [0.5, 2.0], "stage_depths": [[2, 4], [4, 8], [2, 4]]}'),
    ],
)
def test_space_files(tmp_path, suffix: str, text: str) -> None:
    path = tmp_path / f"space{suffix}"
    path.write_text(text)
    space = load_space(path)
    assert space.groups == (3, 8) and space.width == (0.5, 2.0) and space.stage_depths == ((2, 4), (4, 8), (2, 4))


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("a.yaml", "groups: [5]\n", "groups must be a non-empty subset"),
        ("b.yaml", "grups: [3]\n", "unknown design-space key"),
        ("c.yaml", "groups: [3\n", "not valid YAML"),
        ("d.toml", "groups = \n", "not valid TOML"),
        ("e.yaml", "- 1\n- 2\n", "must hold a mapping"),
        ("f.txt", "groups: [3]\n", "use a .yaml"),
        ("g.yaml", "stage_depths: [[4, 2]]\n", "1 <= min <= max"),
    ],
)
def test_bad_space_files_say_what_is_wrong(tmp_path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SpaceFileError, match=message):
        load_space(path)
    with pytest.raises(SpaceFileError, match="no design-space file"):
        load_space(tmp_path / "missing.yaml")
