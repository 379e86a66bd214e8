"""`nas runs copy`: a laptop's study into a real PostgreSQL server, without touching the source."""

from __future__ import annotations

import hashlib
import shutil

import optuna

from nas.records import load_records
from tests.conftest import REPO_ROOT

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "studies-0.1.0.db"


def test_copy_a_study_into_postgresql_and_refuse_to_overwrite(nas, postgres_server, tmp_path) -> None:
    source = tmp_path / "laptop.db"
    shutil.copyfile(FIXTURE, source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    url = postgres_server.create_database("copy_target")
    copied = nas("runs", "copy", "proxy-40M", "--storage", str(source), "--to", url)
    assert copied.returncode == 0, copied.stderr
    original = optuna.load_study(study_name="proxy-40M", storage=f"sqlite:///{source}")
    copy = optuna.load_study(study_name="proxy-40M", storage=url.replace("postgresql://", "postgresql+psycopg://"))
    assert [(r.number, r.state, r.score, r.config) for r in load_records(copy)] == [
        (r.number, r.state, r.score, r.config) for r in load_records(original)
    ]
    assert copy.user_attrs == original.user_attrs
    listed = nas("runs", "list", "--storage", url)
    assert listed.returncode == 0 and "proxy-40M" in listed.stdout
    again = nas("runs", "copy", "proxy-40M", "--storage", str(source), "--to", url)
    assert again.returncode == 2 and "already has a study named 'proxy-40M'" in again.stderr
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest  # the source was only read


def test_a_password_in_the_url_is_refused_before_anything_connects(nas, tmp_path) -> None:
    result = nas("runs", "list", "--storage", "postgresql://me:secret@127.0.0.1:1/nas")
    assert result.returncode == 2
    assert "do not put the database password in --storage" in result.stderr and "secret" not in result.stderr
