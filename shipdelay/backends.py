"""Where MLflow and Optuna keep their records: SQLite and a journal file under the data folder
(profile `local`), or the one PostgreSQL database of `postgres_url` (profile `scale`).

On PostgreSQL both share the database but not its schema: MLflow's tables live in the
connection's default schema (`public`) and Optuna's in a schema of their own, `optuna`. Both
libraries keep their migration state in a table called `alembic_version`; in one schema, each
would read the other's revision and refuse to start (Optuna with "no longer compatible with the
table schema"). The driver is psycopg 3, named in the URL (`postgresql+psycopg://`) so that the
choice never depends on SQLAlchemy's default.

Nothing here connects at import time.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

OPTUNA_SCHEMA = "optuna"
DRIVER = "postgresql+psycopg"
_PLAIN = re.compile(r"^postgres(?:ql)?://", re.IGNORECASE)
_SEARCH_PATH = re.compile(r"search_path\s*=\s*([A-Za-z_][A-Za-z0-9_]*)")


def is_postgres(url: str | None) -> bool:
    """Whether `url` is an SQLAlchemy URL of PostgreSQL, whichever driver it names."""
    return bool(url) and url.lower().split("://", 1)[0].split("+", 1)[0] in ("postgresql",
                                                                              "postgres")


def with_driver(url: str) -> str:
    """`postgresql://...` (or `postgres://...`) with psycopg 3 named; any other URL as given."""
    return _PLAIN.sub(f"{DRIVER}://", url, count=1)


def mlflow_url(postgres_url: str) -> str:
    """The MLflow backend store (tracking and registry) on `postgres_url`."""
    return with_driver(postgres_url)


def optuna_url(url: str) -> str:
    """Optuna's RDB storage on a PostgreSQL `url`, in schema `optuna` unless the URL already
    sets libpq's `options` (then it is taken as the operator wrote it). Other URLs as given."""
    if not is_postgres(url):
        return url
    url = with_driver(url)
    query = url.split("?", 1)[1] if "?" in url else ""
    if any(part.startswith("options=") for part in query.split("&")):
        return url
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}options={quote(f'-csearch_path={OPTUNA_SCHEMA}', safe='')}"


def tracking_uri(settings: Any) -> str:
    """MLflow's tracking and registry URI: `mlflow_tracking_uri` when set, else PostgreSQL when
    `postgres_url` is set (the scale profile), else SQLite under the data folder."""
    if settings.mlflow_tracking_uri:
        return settings.mlflow_tracking_uri
    if settings.postgres_url:
        return mlflow_url(settings.postgres_url)
    return f"sqlite:///{(Path(settings.data_dir) / 'mlflow.db').resolve()}"


def optuna_storage(settings: Any) -> str:
    """Optuna's storage: `optuna_storage` when set, else PostgreSQL when `postgres_url` is set
    (RDB storage, schema `optuna`), else a journal file under the data folder."""
    configured = getattr(settings, "optuna_storage", None)
    if configured:
        return optuna_url(str(configured))
    if settings.postgres_url:
        return optuna_url(settings.postgres_url)
    return f"journal:{(Path(settings.data_dir) / 'optuna' / 'journal.log').resolve()}"


def ensure_schema(url: str) -> None:
    """Create the schema a PostgreSQL `url` puts first on its search path, if missing (Optuna
    creates its tables but not the schema that holds them). Other URLs: nothing to do."""
    if not is_postgres(url):
        return
    found = _SEARCH_PATH.search(_unquoted_query(url))
    if not found:
        return
    import sqlalchemy as sa

    schema = found.group(1)
    engine = sa.create_engine(_without_options(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            # looked up first: creating needs the CREATE right on the database even when the
            # schema exists, and a schema made beforehand by an administrator must do
            if conn.execute(sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :s"),
                            {"s": schema}).first() is not None:
                return
            try:
                conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            except sa.exc.IntegrityError:  # another worker created it at the same moment
                pass
    finally:
        engine.dispose()


def _unquoted_query(url: str) -> str:
    from urllib.parse import unquote

    return unquote(url.split("?", 1)[1]) if "?" in url else ""


def _without_options(url: str) -> str:
    """`url` without its libpq `options` parameter (the schema may not exist yet)."""
    if "?" not in url:
        return url
    base, query = url.split("?", 1)
    kept = [p for p in query.split("&") if p and not p.startswith("options=")]
    return f"{base}?{'&'.join(kept)}" if kept else base
