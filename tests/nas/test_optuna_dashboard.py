"""optuna-dashboard opens a `nas search` storage file as it is (its own WSGI app, real requests)."""

from __future__ import annotations

import io
import json
from wsgiref.util import setup_testing_defaults

import pytest

optuna_dashboard = pytest.importorskip("optuna_dashboard")


def get(app, path: str) -> tuple[str, dict]:
    environ: dict = {}
    setup_testing_defaults(environ)
    environ.update(PATH_INFO=path, REQUEST_METHOD="GET", QUERY_STRING="")
    environ["wsgi.input"] = io.BytesIO()
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    return status[0], json.loads(body)


def test_optuna_dashboard_reads_the_study_file(nas, tmp_path) -> None:
    db = tmp_path / "runs.db"
    result = nas("search", "--budget", "40M", "--n-trials", "3", "--evaluator", "zero-cost", "--storage", str(db),
                 "--no-presets", "--workers", "1")
    assert result.returncode == 0, result.stderr
    import optuna

    app = optuna_dashboard.wsgi(optuna.storages.RDBStorage(f"sqlite:///{db}"))
    status, studies = get(app, "/api/studies")
    assert status.startswith("200")
    [summary] = studies["study_summaries"]
    assert summary["study_name"] == "shufflenet-40M" and summary["directions"] == ["maximize", "minimize"]
    status, detail = get(app, f"/api/studies/{summary['study_id']}")
    assert status.startswith("200") and len(detail["trials"]) == 3
    assert {attr["key"] for attr in detail["trials"][0]["user_attrs"]} >= {"config", "macs", "params", "score"}
