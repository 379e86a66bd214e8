"""Study storage: where every run lives. One Optuna storage, many studies.

Accepted forms of ``--storage``:
- nothing: ``runs/shufflenas.db`` (SQLite) under the current folder;
- a file path ending in ``.db``, ``.sqlite`` or ``.sqlite3``: that SQLite file;
- ``journal:PATH`` or a path ending in ``.log`` / ``.jsonl``: an Optuna journal file;
- any SQLAlchemy URL Optuna accepts (``sqlite:///...``, ``postgresql://...``, ``mysql://...``);
  ``postgresql://`` uses psycopg 3 (``pip install 'shufflenas[postgres]'``), and the password
  comes from ``PGPASSWORD`` or ``~/.pgpass``, never from the URL.
Problems become a one-line :class:`~nas.errors.UserError`; nothing stored is ever modified
by opening it.
"""

from __future__ import annotations

import os
import sqlite3
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import UserError
from nas.storage.optuna_adapter import JournalFile, lock_sqlite_on_begin

if TYPE_CHECKING:
    import optuna

__all__ = [
    "DEFAULT_STORAGE_PATH",
    "GRACE_PERIOD_S",
    "HEARTBEAT_INTERVAL_S",
    "describe_storage",
    "is_comparison_study",
    "list_study_names",
    "load_study",
    "open_storage",
    "resolve_storage_url",
]

DEFAULT_STORAGE_PATH = Path("runs") / "shufflenas.db"
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_JOURNAL_SUFFIXES = (".log", ".jsonl")


def resolve_storage_url(storage: str | os.PathLike | None) -> str:
    """A canonical storage URL: ``sqlite:///abs/path``, ``journal:abs/path`` or the URL given."""
    if storage is None or str(storage).strip() == "":
        return f"sqlite:///{DEFAULT_STORAGE_PATH.resolve()}"
    text = str(storage).strip()
    if text.startswith("journal:"):
        return f"journal:{Path(text[len('journal:'):]).expanduser().resolve()}"
    if "://" in text:
        if text.startswith("sqlite:///"):
            return f"sqlite:///{Path(text[len('sqlite:///'):]).expanduser().resolve()}"
        scheme, _, rest = text.partition("://")
        if scheme in ("postgresql", "postgres"):  # the driver of the [postgres] extra: psycopg 3
            return f"postgresql+psycopg://{rest}"
        return text
    path = Path(text).expanduser()
    if path.suffix in _SQLITE_SUFFIXES:
        return f"sqlite:///{path.resolve()}"
    if path.suffix in _JOURNAL_SUFFIXES:
        return f"journal:{path.resolve()}"
    raise UserError(
        f"storage {text!r} is neither a URL (sqlite:///..., postgresql://...) nor a file ending in "
        f"{', '.join(_SQLITE_SUFFIXES + _JOURNAL_SUFFIXES)}"
    )


def describe_storage(url: str) -> str:
    """A short human form of a storage URL (no password)."""
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///"):]
    if url.startswith("journal:"):
        return url[len("journal:"):]
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


def storage_file(url: str) -> Path | None:
    """The file of a SQLite or journal storage URL; None for a database server."""
    for prefix in ("sqlite:///", "journal:"):
        if url.startswith(prefix):
            return Path(url[len(prefix):])
    return None


def _sqlite_path(url: str) -> Path | None:
    return Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None


def _check_sqlite_file(path: Path, *, create: bool) -> None:
    if path.exists():
        if not os.access(path, os.R_OK):
            raise UserError(f"cannot read the study storage {path}: permission denied")
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
                connection.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.DatabaseError as error:
            raise UserError(f"{path} is not a readable study storage ({error}); point --storage elsewhere") from None
        return
    if not create:
        raise UserError(f"no study storage at {path}; run `nas search` first or pass --storage")
    parent = path.parent
    if not parent.exists():
        try:
            parent.mkdir(parents=True)
        except OSError as error:
            raise UserError(f"cannot create the folder {parent} for the study storage: {error.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise UserError(f"cannot write the study storage in {parent}: permission denied")


HEARTBEAT_INTERVAL_S = 10
"""How often a running trial records that its worker is alive (RDB storages)."""
GRACE_PERIOD_S = 60
"""A RUNNING trial whose worker has not recorded a heartbeat for this long is failed as lost."""

StaleTrialCallback = Callable[["optuna.Study", "optuna.trial.FrozenTrial"], None]


def open_storage(
    storage: str | os.PathLike | None,
    *,
    create: bool = True,
    on_stale_trial: StaleTrialCallback | None = None,
    heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
    grace_period: int = GRACE_PERIOD_S,
) -> optuna.storages.BaseStorage:
    """Open (and with ``create``, make) the storage; every failure is a one-line UserError.

    Claims of enqueued trials are atomic on every kind (see :mod:`.optuna_adapter`). With
    ``on_stale_trial`` (the search engine's), RDB storages record a heartbeat for each
    running trial, and a trial whose worker went silent for ``grace_period`` seconds is
    failed and handed to the callback (Optuna's heartbeat); the journal has no heartbeat.
    """
    url = resolve_storage_url(storage)
    heartbeat: dict[str, Any] = {}
    if on_stale_trial is not None:
        heartbeat = dict(
            heartbeat_interval=heartbeat_interval, grace_period=grace_period, heartbeat_stale_trial_callback=on_stale_trial
        )
    sqlite_path = _sqlite_path(url)
    if sqlite_path is not None:
        _check_sqlite_file(sqlite_path, create=create)
        opened = _rdb_storage(url, str(sqlite_path), engine_kwargs={"connect_args": {"timeout": 60}}, **heartbeat)
        lock_sqlite_on_begin(opened.engine)
        return opened
    if url.startswith("journal:"):
        path = Path(url[len("journal:"):])
        if not path.exists() and not create:
            raise UserError(f"no journal storage at {path}; run `nas search` first or pass --storage")
        if not path.parent.exists():
            if not create:
                raise UserError(f"no journal storage at {path}")
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return JournalFile(path)
        except Exception as error:  # noqa: BLE001
            raise UserError(f"cannot open the journal storage {path}: {_first_line(error)}") from None
    _check_server_url(url)
    return _rdb_storage(url, describe_storage(url), engine_kwargs=dict(SERVER_POOL), **heartbeat)


SERVER_POOL = {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 3, "pool_recycle": 1800}
"""A database server's connection pool per process: a worker holds one connection while it
works and one for its heartbeat; pre-ping replaces connections the server dropped."""


def _check_server_url(url: str) -> None:
    """A server URL must not carry a password, and its driver must be installed."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(f"storage {describe_storage(url)!r} is not a database URL (e.g. postgresql://user@host/db)") from None
    if parsed.password:
        raise UserError(
            "do not put the database password in --storage (it shows in `ps` and the shell history); "
            "set PGPASSWORD in the environment or put it in ~/.pgpass"
        )
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg":
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise UserError("PostgreSQL storage needs psycopg: pip install 'shufflenas[postgres]'") from None


def _rdb_storage(url: str, shown: str, **kwargs: Any) -> optuna.storages.RDBStorage:
    """Open an RDB storage; retry briefly when another process is creating the same schema."""
    import time

    import optuna

    attempts = 5
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # Optuna marks its heartbeat experimental; we rely on it knowingly
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, **kwargs)
        except Exception as error:  # noqa: BLE001 - SQLAlchemy/Optuna raise many kinds
            racing = any(word in str(error) for word in ("UNIQUE constraint", "already exists", "database is locked"))
            if racing and attempt < attempts - 1:
                time.sleep(0.3 * (attempt + 1))
                continue
            raise UserError(f"cannot open the study storage {shown}: {_first_line(error)}") from None
    raise AssertionError("unreachable")


def list_study_names(storage: optuna.storages.BaseStorage, *, comparisons: bool = True) -> list[str]:
    """Study names, oldest first; ``comparisons=False`` leaves out the result studies of
    ``nas compare`` / ``nas final`` (they hold training runs, not a search)."""
    return [summary.study_name for summary in storage.get_all_studies()
            if comparisons or not is_comparison_study(summary.user_attrs)]


def is_comparison_study(user_attrs: Mapping[str, Any]) -> bool:
    from nas.records import COMPARE_FIDELITY

    return COMPARE_FIDELITY in user_attrs


def load_study(storage: optuna.storages.BaseStorage, name: str | None) -> optuna.Study:
    """An existing study by name; with ``name=None``, the only (or newest) search study."""
    import optuna

    summaries = storage.get_all_studies()
    names = [summary.study_name for summary in summaries]
    if not names:
        raise UserError("the storage holds no study yet; run `nas search` first")
    if name is None:
        searches = [summary.study_name for summary in summaries if not is_comparison_study(summary.user_attrs)]
        if not searches:
            raise UserError("the storage holds no search study; give --study")
        name = searches[-1]
    elif name not in names:
        raise UserError(f"no study named {name!r}; the storage holds: {', '.join(names)}")
    return optuna.load_study(study_name=name, storage=storage)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
