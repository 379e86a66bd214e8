"""shufflenas dashboard: explore a search's accuracy-complexity trade-off and pick a model.

Started by ``nas dashboard``, which passes the storage in the SHUFFLENAS_STORAGE environment
variable and whether the page may act on this machine (run ``nas export``, train, open another
storage) in SHUFFLENAS_DASHBOARD_ACTIONS; ``streamlit run dashboard/app.py`` works too, read-only.
Every problem with the storage or a study is shown as a message in the page, never as a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script by Streamlit: make the repository importable
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)

import streamlit as st

from dashboard.data import LoadError, StudyData, actions_from_env, load_study_data, storage_from_env, trial_counts
from dashboard.views import render_design_space, render_final_stage, render_pareto, render_summary, render_trial_detail
from nas.storage import DEFAULT_STORAGE_PATH

NO_STUDY_HINT = "run `nas search --budget 140M --study NAME --storage PATH` to create one"
READ_ONLY_NOTE = ("Read-only: this dashboard is served to the network without `--allow-remote-actions`, so it "
                  "shows this storage only and runs no export or training.")


def _sidebar(can_act: bool) -> tuple[str, float | None]:
    given = storage_from_env() or str(DEFAULT_STORAGE_PATH)
    with st.sidebar:
        st.header("shufflenas")
        if can_act:
            storage = st.text_input("study storage", value=given, key="storage",
                                    help="SQLite file (.db), journal file (.log) or an SQLAlchemy URL")
        else:
            st.session_state["storage"] = given  # whatever a visitor sent, the field shows and uses this one
            st.text_input("study storage", key="storage", disabled=True, help="fixed when the dashboard was started")
            storage = given
            st.caption(READ_ONLY_NOTE)
        refresh = st.toggle("refresh while a search runs", value=False, key="auto_refresh")
        every = st.number_input("every (s)", min_value=2, max_value=600, value=5, step=1, key="refresh_every",
                                disabled=not refresh)
    return storage, (float(every) if refresh else None)


def _load(storage: str, names: list[str]) -> list[StudyData]:
    studies = []
    for name in names:
        try:
            studies.append(load_study_data(storage, name))
        except LoadError as error:
            st.error(str(error))
    return studies


def _body(storage: str, can_act: bool) -> None:
    try:
        counts = trial_counts(storage)
    except LoadError as error:
        st.error(f"Cannot open the study storage: {error}")
        return
    names = list(counts)
    if not names:
        st.info(f"The storage {storage} holds no study yet; {NO_STUDY_HINT}.")
        return
    if any(name not in names for name in st.session_state.get("studies", [])):
        st.session_state["studies"] = [name for name in st.session_state["studies"] if name in names]
    if not st.session_state.get("studies"):
        st.session_state["studies"] = [next((name for name in reversed(names) if counts[name]), names[-1])]
    chosen = st.multiselect("studies (side by side)", names, key="studies")
    if not chosen:
        st.info("Choose at least one study.")
        return
    studies = _load(storage, chosen)
    if not studies:
        return
    render_summary(studies)
    empty = [d.name for d in studies if not d.completed]
    if empty:
        st.info(f"No completed trial yet in {', '.join(empty)}; turn on refresh to follow a running search.")
    studies_with_results = [d for d in studies if d.completed]
    if not studies_with_results:
        return
    quality = studies_with_results[0].quality
    others = [d.name for d in studies_with_results if d.quality != quality]
    if others:
        st.warning(f"{', '.join(others)} measured a different quality than {studies_with_results[0].name} "
                   "(zero-cost score vs trained accuracy), so they cannot share its axes; select them on their own "
                   "to see them.")
        studies_with_results = [d for d in studies_with_results if d.quality == quality]
    render_pareto(studies_with_results)
    render_final_stage(studies_with_results)
    render_trial_detail(studies_with_results, storage, can_act=can_act)
    render_design_space(studies_with_results)


def main() -> None:
    st.set_page_config(page_title="shufflenas dashboard", layout="wide")
    st.title("ShuffleNet v1 search")
    can_act = actions_from_env()
    storage, every = _sidebar(can_act)
    st.fragment(run_every=every)(_body)(storage, can_act)


main()
