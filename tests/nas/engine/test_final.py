"""The final stage's logic: who races, the reference, halving, the verdict and where it is stored.

Training is replaced here by scripted accuracies (a ``SeedRunner`` whose ``run`` stores a
number per config) so that each decision can be checked exactly; tests/nas/commands/test_final.py
drives the real command with real training.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from nas.engine.final import FinalSettings, reference_for, run_final
from nas.evaluation.comparison import Contender, Fidelity, SeedRunner, open_result_store
from nas.records import FINAL_ANSWER, StudyInfo, TrialRecord
from nas.results import choose_best, finalists
from search_spaces import DesignSpace, solve_width
from shufflenet_core import ShuffleNetConfig, complexity, get_preset

SPACE = DesignSpace(num_classes=10)
INFO = StudyInfo("s", 140_000_000, "140M", ("accuracy", "mflops"), None, {})


def config(groups: int, depths: tuple[int, int, int], ratio: float = 0.5, budget: int = 140_000_000) -> ShuffleNetConfig:
    return solve_width(SPACE, budget, groups=groups, bottleneck_ratio=ratio, stage_depths=depths, stem_channels=24)


def record(number: int, cfg: ShuffleNetConfig, accuracy: float, *, feasible: bool = True, preset: str | None = None,
           latency_ms: float | None = None, attrs: dict | None = None) -> TrialRecord:
    macs = complexity(cfg).macs
    return TrialRecord("s", number, "COMPLETE", cfg, macs, 1, accuracy, None, latency_ms, feasible, (), preset,
                       {"preset": preset, **(attrs or {})} if preset else dict(attrs or {}))


class ScriptedRunner(SeedRunner):
    """Stores ``truth[config] + noise[seed]`` instead of training."""

    def __init__(self, truth: dict[str, float], fidelity: Fidelity) -> None:
        storage = optuna.storages.InMemoryStorage()
        super().__init__(open_result_store(storage, fidelity), fidelity)
        self.truth = truth
        self.calls: list[tuple[str, int]] = []

    def run(self, contender: Contender, seed: int) -> None:
        if self.store.score(contender.config, seed) is not None:
            return
        self.calls.append((contender.config.short_name, seed))
        value = self.truth[contender.config.short_name] + 0.001 * (seed % 3)
        self.store.add(contender, seed, value, diverged=False, seconds=0.0,
                       test_accuracy=value - 0.01 if self.with_test else None)
        self.trained += 1

    def images_evaluated(self) -> int:
        return 2000


def _race(records, truth, **settings):
    runner = ScriptedRunner(truth, Fidelity(epochs=3, train_size=None, split="selection"))
    verdict = run_final(records, INFO, FinalSettings(fidelity=runner.fidelity, **settings), runner)
    return verdict, runner


def test_finalists_are_the_best_distinct_configs_of_the_feasible_front_within_every_budget() -> None:
    a, b, c = config(3, (2, 4, 2)), config(1, (2, 4, 2)), config(2, (2, 6, 2))
    over = config(8, (2, 4, 2), budget=200_000_000)
    records = [record(0, a, 0.85), record(1, b, 0.86), record(2, a, 0.85), record(3, c, 0.80, feasible=False),
               record(4, over, 0.95), record(5, config(3, (1, 1, 1), budget=20_000_000), 0.70)]
    assert [r.number for r in finalists(records, INFO, 3)] == [1, 0, 5]  # trial 2 repeats trial 0's config
    timed = StudyInfo("s", 140_000_000, "140M", ("accuracy", "mflops", "latency_ms"), 5.0, {})
    records_with_latency = [record(0, a, 0.85, latency_ms=4.0), record(1, b, 0.86, latency_ms=6.0)]
    assert [r.number for r in finalists(records_with_latency, timed, 3)] == [0]


def test_the_reference_is_the_papers_best_preset_in_budget_or_g3_widened_to_it() -> None:
    like = config(3, (2, 4, 2))
    at_140 = reference_for([], INFO, like)
    assert at_140.contender.label == "shufflenet_v1_1.0x_g8"  # 32.4% top-1 error, the paper's best at 1x
    assert at_140.contender.config == get_preset("shufflenet_v1_1.0x_g8").replace(num_classes=10)
    assert at_140.trial is None
    ran = reference_for([record(7, at_140.contender.config, 0.84, preset="shufflenet_v1_1.0x_g8")], INFO, like)
    assert ran.trial == 7 and ran.contender.label == "shufflenet_v1_1.0x_g8 (trial 7)"
    small = StudyInfo("t", 10_000_000, "10M", ("accuracy", "mflops"), None, {})  # the smallest preset needs ~13M
    widened = reference_for([], small, like).contender
    assert widened.label == "g3,b0.25,d4-8-4 (paper depths, width solved to the budget)"
    assert widened.config.groups == 3 and tuple(widened.config.stage_depths) == (4, 8, 4)
    assert 0.7 * 10_000_000 < complexity(widened.config).macs <= 10_000_000
    tiny = StudyInfo("t", 5_000_000, "5M", ("accuracy", "mflops"), None, {})  # even the narrowest g3 d4-8-4 is larger
    assert "still over the budget" in reference_for([], tiny, like).contender.label


def test_halving_keeps_the_better_half_and_the_last_comparison_uses_fresh_seeds() -> None:
    cfgs = [config(3, (2, 4, 2)), config(1, (2, 4, 2)), config(2, (2, 6, 2)), config(4, (2, 4, 2)), config(3, (1, 3, 1))]
    by_macs = sorted(range(5), key=lambda i: complexity(cfgs[i]).macs)
    records = [record(i, cfgs[i], 0.80 + 0.01 * by_macs.index(i)) for i in range(5)]  # all five on the front
    assert len(finalists(records, INFO, 5)) == 5
    truth = {c.short_name: v for c, v in zip(cfgs, (0.90, 0.70, 0.86, 0.72, 0.71), strict=True)}
    truth[get_preset("shufflenet_v1_1.0x_g8").replace(num_classes=10).short_name] = 0.80
    verdict, runner = _race(records, truth, finalists=5, round_seeds=2, seeds=4, first_seed=100)
    assert [len(r["entries"]) for r in verdict["rounds"]] == [5, 3]  # 5 -> 3 -> 2
    assert verdict["rounds"][0]["seeds"] == [100, 101] and verdict["rounds"][1]["seeds"] == [102, 103]
    assert verdict["final_seeds"] == [104, 105, 106, 107]
    survivors = {row["trial"] for row in verdict["finalists"]} - {None}
    assert survivors == {0, 2}  # the truly best two, whatever the search scored them
    assert verdict["answer_trial"] == 0 and verdict["beats_reference"]
    answer = next(row for row in verdict["finalists"] if row["trial"] == 0)
    assert answer["p_value"] == pytest.approx(1 / 70) and answer["scores"] and len(answer["test_scores"]) == 4
    assert verdict["verdict"].startswith("answer: trial 0 (") and "p = 0.014" in verdict["verdict"]
    assert "smallest reachable p 0.014" in verdict["verdict"] and "on the test split" in verdict["verdict"]
    assert not any(name == cfgs[1].short_name and seed >= 102 for name, seed in runner.calls)  # dropped after round 1


def test_when_nothing_beats_the_reference_the_verdict_says_so_and_answers_with_the_reference_trial() -> None:
    g8 = get_preset("shufflenet_v1_1.0x_g8").replace(num_classes=10)
    cfgs = [config(3, (2, 4, 2)), config(1, (2, 4, 2))]
    records = [record(0, cfgs[0], 0.86), record(1, cfgs[1], 0.85), record(2, g8, 0.84, preset="shufflenet_v1_1.0x_g8")]
    truth = {cfgs[0].short_name: 0.80, cfgs[1].short_name: 0.79, g8.short_name: 0.80}
    verdict, _ = _race(records, truth, finalists=2, seeds=4)
    assert not verdict["beats_reference"] and verdict["answer_trial"] == 2
    assert verdict["verdict"].startswith("answer: the reference, since no finalist beats the reference "
                                         "shufflenet_v1_1.0x_g8 (trial 2)")


def test_two_seeds_cannot_reach_significance_and_the_verdict_says_how_close_it_can_get() -> None:
    cfgs = [config(3, (2, 4, 2))]
    truth = {cfgs[0].short_name: 0.95, get_preset("shufflenet_v1_1.0x_g8").replace(num_classes=10).short_name: 0.5}
    verdict, _ = _race([record(0, cfgs[0], 0.9)], truth, finalists=1, seeds=2)
    assert not verdict["beats_reference"] and verdict["answer_trial"] is None  # the reference never ran in the study
    assert "smallest reachable p 0.17" in verdict["verdict"]


def test_the_stored_answer_is_what_best_means_while_it_meets_the_budgets() -> None:
    a, b = config(3, (2, 4, 2)), config(1, (2, 4, 2), budget=100_000_000)
    records = [record(0, a, 0.86), record(1, b, 0.84)]
    plain = choose_best(records, INFO)
    assert plain.record is not None and plain.record.number == 0 and plain.final is None
    answered = StudyInfo("s", 140_000_000, "140M", ("accuracy", "mflops"), None,
                         {FINAL_ANSWER: {"answer_trial": 1, "verdict": "answer: trial 1"}})
    choice = choose_best(records, answered)
    assert choice.record is not None and choice.record.number == 1 and choice.final is not None
    tighter = choose_best(records, answered, budget_macs=complexity(b).macs - 1)  # the answer no longer fits
    assert tighter.record is None or tighter.record.number != 1


class WeightWritingRunner(ScriptedRunner):
    """Also writes a (dummy) weights file per run where the real runner saves the state_dict."""

    def run(self, contender: Contender, seed: int) -> None:
        if self.store.score(contender.config, seed) is not None:
            return
        path = self._job(0, contender, seed).save_to
        value = self.truth[contender.config.short_name] + 0.001 * (seed % 3)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(b"weights")
        self.store.add(contender, seed, value, diverged=False, seconds=0.0, test_accuracy=value - 0.01, weights_path=path)


def test_the_answers_most_accurate_final_run_keeps_its_weights_and_the_other_runs_files_are_deleted(tmp_path) -> None:
    a, b = config(3, (2, 4, 2)), config(1, (2, 4, 2))
    reference = get_preset("shufflenet_v1_1.0x_g8").replace(num_classes=10)
    records = [record(0, a, 0.85), record(1, b, 0.84), record(2, reference, 0.80, preset="shufflenet_v1_1.0x_g8")]
    truth = {a.short_name: 0.90, b.short_name: 0.85, reference.short_name: 0.80}
    runner = WeightWritingRunner(truth, Fidelity(epochs=3, train_size=None, split="selection"))
    others = tmp_path / "other-study"  # a file of this fidelity's runs that another study's stage kept
    others.mkdir()
    (others / "keep.pt").write_bytes(b"theirs")
    ours = tmp_path / "weights"
    verdict = run_final(records, INFO, FinalSettings(fidelity=runner.fidelity, weights_dir=ours, seeds=4), runner)
    kept = verdict["answer_weights"]
    assert verdict["answer_trial"] == 0 and kept is not None
    scores = {seed: runner.store.score(a, seed) for seed in verdict["final_seeds"]}
    assert kept["seed"] == max(scores, key=lambda s: (scores[s], -s)) and kept["accuracy"] == scores[kept["seed"]]
    assert sorted(ours.iterdir()) == [Path(kept["path"])]  # 3 contenders x 4 seeds written, 1 left
    assert (others / "keep.pt").exists()
    chosen = choose_best(records, StudyInfo("s", 140_000_000, "140M", ("accuracy", "mflops"), None,
                                            {FINAL_ANSWER: verdict}))
    assert chosen.record is not None and chosen.record.number == 0
    from nas.results import answer_weights

    assert answer_weights(chosen.record, StudyInfo("s", 140_000_000, "140M", (), None, {FINAL_ANSWER: verdict})) == kept
    assert answer_weights(records[1], StudyInfo("s", 140_000_000, "140M", (), None, {FINAL_ANSWER: verdict})) is None
    Path(kept["path"]).unlink()
    assert answer_weights(chosen.record, StudyInfo("s", 140_000_000, "140M", (), None, {FINAL_ANSWER: verdict})) is None
