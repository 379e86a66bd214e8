"""Opening a storage and choosing its study, as every command does."""

from __future__ import annotations

import optuna

from nas.records import COMPARE_FIDELITY
from nas.storage import list_study_names, load_study, open_storage


def test_the_default_study_is_the_newest_search_not_a_comparison_result(tmp_path) -> None:
    """Regression: after `nas final`, `nas export --best` without --study picked its result study."""
    storage = open_storage(str(tmp_path / "s.db"))
    optuna.create_study(study_name="search", storage=storage)
    results = optuna.create_study(study_name="compare-1ep", storage=storage)
    results.set_user_attr(COMPARE_FIDELITY, {"epochs": 1})
    assert load_study(storage, None).study_name == "search"
    assert list_study_names(storage, comparisons=False) == ["search"]
    assert list_study_names(storage) == ["search", "compare-1ep"]
