"""The Feast store, configured from Settings (no feature_store.yaml to keep in sync).

Profile `local`: SQLite online store and the DuckDB offline store over Parquet files under
`<data_dir>/feast`; profile `scale` (or `SHIPDELAY_ONLINE_STORE=redis`): the Redis online store.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from feast import FeatureStore
from feast.infra.offline_stores.duckdb import DuckDBOfflineStoreConfig
from feast.infra.online_stores.redis import RedisOnlineStoreConfig
from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
from feast.repo_config import RegistryConfig, RepoConfig

from shipdelay.settings import Settings, get_settings

PROJECT = "shipdelay"


def feast_dir(settings: Settings) -> Path:
    return (settings.data_dir / "feast").resolve()


def offline_dir(settings: Settings) -> Path:
    """Where the offline feature tables live: one folder of Parquet parts per feature view."""
    return feast_dir(settings) / "offline"


def redis_connection_string(url: str) -> str:
    """redis://[:password@]host:port/db -> Feast's "host:port,db=N,password=..." form."""
    parsed = urlparse(url)
    parts = [f"{parsed.hostname or '127.0.0.1'}:{parsed.port or 6379}"]
    db = (parsed.path or "/0").lstrip("/") or "0"
    parts.append(f"db={db}")
    if parsed.password:
        parts.append(f"password={parsed.password}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def repo_config(settings: Settings | None = None) -> RepoConfig:
    settings = settings or get_settings()
    root = feast_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    if settings.online_store == "redis":
        online = RedisOnlineStoreConfig(
            connection_string=redis_connection_string(settings.redis_url or "redis://127.0.0.1:6379/0"))
    else:
        online = SqliteOnlineStoreConfig(path=str(root / "online.db"))
    return RepoConfig(
        project=PROJECT,
        provider="local",
        registry=RegistryConfig(path=str(root / "registry.db"), cache_ttl_seconds=60),
        online_store=online,
        offline_store=DuckDBOfflineStoreConfig(),
        repo_path=root,
        entity_key_serialization_version=3,
    )


def get_store(settings: Settings | None = None) -> FeatureStore:
    """A FeatureStore over this deployment's registry, online and offline stores."""
    return FeatureStore(config=repo_config(settings))
