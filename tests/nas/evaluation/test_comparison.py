"""How `nas compare` names configs and judges gaps (no training here)."""

from __future__ import annotations

import json
import math

import pytest

from nas.errors import UserError
from nas.evaluation.comparison import Contender, Fidelity, compare, parse_contender, smallest_reachable_p, verdict
from shufflenet_core import complexity, get_preset

BUDGET = 140_000_000


def test_a_preset_name_is_the_preset_and_noshuffle_only_turns_the_shuffle_off() -> None:
    plain = parse_contender("shufflenet_v1_1.0x_g8", BUDGET)
    ablated = parse_contender("shufflenet_v1_1.0x_g8+noshuffle", BUDGET)
    assert plain.config == get_preset("shufflenet_v1_1.0x_g8")
    assert ablated.config == plain.config.replace(channel_shuffle=False)
    assert ablated.label == "shufflenet_v1_1.0x_g8+noshuffle"
    assert complexity(ablated.config).macs == complexity(plain.config).macs  # the shuffle costs no FLOPs


def test_a_knob_spec_is_widened_to_fill_the_budget_and_no_further() -> None:
    contender = parse_contender("g3,b0.5,d2-4-2", BUDGET)
    config = contender.config
    assert (config.groups, config.bottleneck_ratio, tuple(config.stage_depths)) == (3, 0.5, (2, 4, 2))
    assert contender.mflops * 1e6 <= BUDGET
    assert contender.mflops * 1e6 > 0.9 * BUDGET  # solved to the budget, not left at some small width


def test_a_config_json_file_and_an_export_config_both_read(tmp_path) -> None:
    config = get_preset("shufflenet_v1_0.5x_g3")
    bare, wrapped = tmp_path / "bare.json", tmp_path / "config.json"
    bare.write_text(json.dumps(config.to_dict()))
    wrapped.write_text(json.dumps({"config": config.to_dict(), "accuracy": 0.8}))
    assert parse_contender(str(bare), BUDGET).config == config
    assert parse_contender(str(wrapped), BUDGET).config == config


def test_study_trial_reads_the_stored_config() -> None:
    config = get_preset("shufflenet_v1_0.5x_g3")
    assert parse_contender("study:7", BUDGET, trial_config=lambda n: config.to_dict()).config == config


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("g3,b0.5", "knob spec"),
        ("g3,b0.5,d2-4-2+fast", "only modifier"),
        ("study:7", "needs --study"),
        ("g5,b0.5,d2-4-2", "groups must be one of 1, 2, 3, 4, 8"),
        ("g3,b2,d2-4-2", "b must be in (0, 1]"),
        ("g3,bhalf,d2-4-2", "whole numbers"),
        ("nothing.json", "cannot read"),
    ],
)
def test_a_config_that_cannot_be_read_is_one_clear_user_error(text: str, says: str) -> None:
    with pytest.raises(UserError) as error:
        parse_contender(text, BUDGET)
    assert "\n" not in str(error.value) and text in str(error.value)
    assert says in str(error.value)


def test_a_broken_json_file_names_its_line(tmp_path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"groups": 3,\n oops}')
    with pytest.raises(UserError, match="not valid JSON .* line 2"):
        parse_contender(str(path), BUDGET)


def test_the_smallest_reachable_p_is_one_over_the_number_of_splits() -> None:
    assert smallest_reachable_p(2, 2) == pytest.approx(1 / 6)
    assert smallest_reachable_p(5, 5) == pytest.approx(1 / 252)
    assert smallest_reachable_p(3, 3) == pytest.approx(0.05)  # so 4 seeds is the fewest that can go below 0.05
    assert smallest_reachable_p(4, 4) < 0.05


def _contenders() -> list[Contender]:
    return [parse_contender("shufflenet_v1_1.0x_g3", BUDGET), parse_contender("shufflenet_v1_1.0x_g8", BUDGET),
            parse_contender("shufflenet_v1_1.0x_g3+noshuffle", BUDGET)]


def test_a_clean_separation_reaches_the_smallest_p_and_wins_the_verdict() -> None:
    reference = [0.80, 0.81, 0.79, 0.80, 0.805]
    better = [0.85, 0.86, 0.84, 0.85, 0.855]
    worse = [0.70, 0.72, 0.71, 0.69, 0.70]
    results = compare(_contenders(), [reference, better, worse], reference=0)
    assert results[0].p_value is None and results[0].gap is None
    assert results[1].p_value == pytest.approx(smallest_reachable_p(5, 5))
    assert results[1].gap == pytest.approx(0.05)
    assert results[2].p_value == pytest.approx(1.0)  # "better" is one-sided: a worse config gets p = 1
    line = verdict(results, 0, Fidelity(epochs=3))
    assert line.startswith("shufflenet_v1_1.0x_g8 ") and "beats shufflenet_v1_1.0x_g3" and "p = 0.00397" in line
    assert "3 epoch(s)" in line and "5 seeds" in line


def test_overlapping_scores_give_no_winner_and_too_few_seeds_say_so() -> None:
    reference, other = [0.80, 0.82], [0.83, 0.84]
    results = compare(_contenders()[:2], [reference, other], reference=0)
    assert results[1].p_value == pytest.approx(1 / 6)  # the best 2 vs 2 can do
    line = verdict(results, 0, Fidelity())
    assert line.startswith("no config beats shufflenet_v1_1.0x_g3") and "out of reach: add seeds" in line
    assert math.isclose(results[1].gap or 0, 0.025)


def test_the_fidelity_names_its_study_so_that_fidelities_never_mix() -> None:
    names = {Fidelity().study_name(), Fidelity(epochs=3).study_name(), Fidelity(train_size=None).study_name(),
             Fidelity(split="val").study_name(), Fidelity(data="imagefolder:/data/x").study_name()}
    assert len(names) == 5
    with pytest.raises(UserError, match="--eval-on"):
        Fidelity(split="train")
