"""The Feast store, configured from Settings (no feature_store.yaml to keep in sync).

Profile `local`: SQLite online store and the DuckDB offline store over Parquet files under
`<data_dir>/feast`; profile `scale` (or `SHIPDELAY_ONLINE_STORE=redis`): the Redis online store,
connected from `settings.redis_url` (`UrlRedisOnlineStore`) with short, explicit timeouts.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from feast import FeatureStore
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
from feast.repo_config import RegistryConfig, RepoConfig
from pydantic import SecretStr

from features.offline_store import offline_store_config
from shipdelay.settings import Settings, get_settings

PROJECT = "shipdelay"


def feast_dir(settings: Settings) -> Path:
    return (settings.data_dir / "feast").resolve()


def offline_dir(settings: Settings) -> Path:
    """Where the offline feature tables live: one folder of Parquet parts per feature view."""
    return feast_dir(settings) / "offline"


def redis_connection_string(url: str) -> str:
    """redis://[user:password@]host:port/db -> Feast's "host:port,db=N[,ssl=true]" form, without
    the credentials: what Feast shows of the store (the client is built from the URL itself)."""
    parsed = urlparse(url)
    parts = [f"{parsed.hostname or '127.0.0.1'}:{parsed.port or 6379}"]
    db = (parsed.path or "/0").lstrip("/") or "0"
    parts.append(f"db={db}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


class UrlRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    """Feast's Redis online store, connected from a redis:// URL with explicit timeouts.

    Feast builds its client from `connection_string` ("host:port,password=...") split at every
    "," and each value JSON-decoded, so a password holding "," is cut and one such as "123" or
    "true" is sent as another type; nor does it set timeouts or retries (redis-py's default is
    three retries with a backoff of up to 10 s, longer than the service's request timeout).
    Feast finds the store class by this class's name (`UrlRedisOnlineStore`, below)."""

    url: SecretStr
    connect_timeout_s: float = 0.5
    read_timeout_s: float = 1.0
    retries: int = 1


def redis_client(config: RedisOnlineStoreConfig):
    """A redis-py client for the online store `config` describes: from its URL (the password
    percent-decoded, as in any URL) with its timeouts, or Feast's own for a plain config."""
    if not isinstance(config, UrlRedisOnlineStoreConfig):
        return RedisOnlineStore()._get_client(config)
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(config.url.get_secret_value(),
                                socket_connect_timeout=config.connect_timeout_s,
                                socket_timeout=config.read_timeout_s,
                                retry=Retry(NoBackoff(), config.retries))


class UrlRedisOnlineStore(RedisOnlineStore):
    """Feast's Redis online store with the client of `redis_client` (see its config class)."""

    def _get_client(self, online_store_config: RedisOnlineStoreConfig):
        if not self._client:
            self._client = redis_client(online_store_config)
        return self._client

    async def _get_client_async(self, online_store_config: RedisOnlineStoreConfig):
        if not isinstance(online_store_config, UrlRedisOnlineStoreConfig):
            return await super()._get_client_async(online_store_config)
        if not self._client_async:
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            c = online_store_config
            self._client_async = Redis.from_url(c.url.get_secret_value(),
                                                socket_connect_timeout=c.connect_timeout_s,
                                                socket_timeout=c.read_timeout_s,
                                                retry=Retry(NoBackoff(), c.retries))
        return self._client_async


def repo_config(settings: Settings | None = None) -> RepoConfig:
    settings = settings or get_settings()
    root = feast_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    if settings.online_store == "redis":
        url = settings.redis_url or "redis://127.0.0.1:6379/0"
        online = UrlRedisOnlineStoreConfig(
            connection_string=redis_connection_string(url), url=url,
            connect_timeout_s=settings.redis_connect_timeout_s,
            read_timeout_s=settings.redis_read_timeout_s, retries=settings.redis_retries)
    else:
        online = SqliteOnlineStoreConfig(path=str(root / "online.db"))
    return RepoConfig(
        project=PROJECT,
        provider="local",
        registry=RegistryConfig(path=str(root / "registry.db"), cache_ttl_seconds=60),
        online_store=online,
        offline_store=offline_store_config(),
        repo_path=root,
        entity_key_serialization_version=3,
    )


def get_store(settings: Settings | None = None) -> FeatureStore:
    """A FeatureStore over this deployment's registry, online and offline stores."""
    return FeatureStore(config=repo_config(settings))
