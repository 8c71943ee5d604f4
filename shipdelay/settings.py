"""One typed settings object for every part of shipdelay.

Profiles only change defaults: `local` keeps everything embedded under `./data`; `scale` points at
Redis, Kafka, PostgreSQL and Spark. Any field can be overridden with a `SHIPDELAY_<FIELD>`
environment variable (e.g. `SHIPDELAY_DATA_DIR=/mnt/lake`, `SHIPDELAY_REDIS_URL=...`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shipdelay.memory import default_budget_gb

Profile = Literal["local", "scale"]

# At scale every connection is encrypted and authenticated: Redis over TLS (rediss://) with its
# AUTH password in SHIPDELAY_REDIS_URL (rediss://:<password>@host:port/db), PostgreSQL with
# sslmode=require and its password in SHIPDELAY_POSTGRES_URL or libpq's PGPASSWORD / ~/.pgpass.
_SCALE_DEFAULTS = {
    "online_store": "redis",
    "redis_url": "rediss://127.0.0.1:6379/0",
    "kafka_bootstrap": "127.0.0.1:9092",
    "postgres_url": "postgresql://shipdelay@127.0.0.1:5432/shipdelay?sslmode=require",
    "spark_master": "spark://127.0.0.1:7077",
}

# Forward-secret AEAD suites only (ECDHE with AES-GCM or ChaCha20-Poly1305): the ciphers that
# BentoML and uvicorn offer by default ("TLSv1") give TLS 1.2 clients only CBC suites with SHA-1.
SSL_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class Settings(BaseSettings):
    """Resolved configuration; read it with `get_settings()`."""

    model_config = SettingsConfigDict(env_prefix="SHIPDELAY_", env_file=".env", extra="ignore")

    profile: Profile = Field("local", description="local = embedded default, scale = real engines")
    data_dir: Path = Field(Path("data"), description="root of the lake, stores and runs")
    online_store: Literal["sqlite", "redis"] = Field("sqlite", description="Feast online store")
    online_read: Literal["direct", "feast"] = Field(
        "direct", description="how the service reads online features: direct = the online "
        "store's tables read directly (fast), feast = Feast's get_online_features (reference)")
    redis_url: str | None = Field(None, description="Redis for the online store (scale): "
                                  "redis[s]://[user:password@]host:port/db, special characters "
                                  "of the password percent-encoded as in any URL")
    redis_connect_timeout_s: float = Field(0.5, gt=0, description="seconds to wait for a "
                                           "connection to Redis")
    redis_read_timeout_s: float = Field(1.0, gt=0, description="seconds one Redis command may "
                                        "take to answer; raise it for very large writes")
    redis_retries: int = Field(1, ge=0, le=5, description="Redis connections or commands tried "
                               "again, at once, after a connection error")
    kafka_bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers; unset = librdkafka's embedded mock cluster"
    )
    kafka_security: dict[str, str] = Field(
        default_factory=dict, description="extra librdkafka settings (TLS/SASL), passed through"
    )
    kafka_topic_prefix: str = Field("shipdelay.", description="prefix of the stream's topics: "
                                    "tracking-events, risk-updates, risk-alerts, dead-letters")
    kafka_group: str = Field("shipdelay-stream", description="consumer group of the stream scorer")
    stream_alert_threshold: float = Field(0.6, ge=0, le=1, description="alert when P(late) "
                                          "crosses this")
    encryption: bool = Field(True, description="encrypt every Parquet file written (lake, feature "
                             "store, scores, training splits); reading them needs the master key")
    encryption_key_file: Path | None = Field(
        None, description="master keys of the local KMS (default <data_dir>/keys/"
        "master-keys.json); back it up apart from the data, never beside it")
    encryption_key_id: str = Field("shipdelay", description="master key id new files name")
    encryption_kms: str = Field("shipdelay.crypto.LocalKeyFileKms", description="class path of "
                                "the KMS client (a pyarrow KmsClient): the local key file, or "
                                "your Vault / AWS KMS client")
    encryption_kms_url: str | None = Field(None, description="address of a remote KMS")
    encryption_kms_token: SecretStr | None = Field(None, description="access token of a remote "
                                                   "KMS")
    stream_alert_jump: float = Field(0.2, ge=0, le=1, description="alert when P(late) rises by "
                                     "more than this since the shipment's previous score")
    stream_batch_max: int = Field(20_000, ge=1, description="most events in one micro-batch")
    stream_batch_ms: int = Field(100, ge=1, description="longest wait to fill a micro-batch")
    stream_max_message_bytes: int = Field(
        65_536, ge=1_024, le=16_777_216, description="largest tracking-event message (key and "
        "value) the stream reads; larger ones are dead letters, unread")
    postgres_url: str | None = Field(None, description="PostgreSQL for MLflow (tracking and "
                                     "registry) and Optuna (schema optuna), when set")
    mlflow_tracking_uri: str | None = Field(None, description="default: postgres_url when set, "
                                            "else SQLite under data_dir")
    optuna_storage: str | None = Field(None, description="Optuna's storage for `shipdelay tune`; "
                                       "default: postgres_url when set, else a journal file "
                                       "under data_dir")
    spark_master: str = Field("local[2]", description="Spark master URL for batch scoring")
    api_key: SecretStr | None = Field(None, description="API key for prediction routes")
    serve_ssl_ciphers: str = Field(
        SSL_CIPHERS, description="OpenSSL cipher list the service offers over TLS 1.2 (TLS 1.3 "
        "suites are always offered); `shipdelay serve --ssl-ciphers` overrides it")
    serve_client_concurrency: int = Field(32, ge=0, description="requests one client address "
                                          "may have in flight at once, 429 beyond (0: no limit)")
    serve_body_timeout_s: float = Field(5.0, gt=0, description="seconds a client has to send a "
                                        "request body once its headers arrived, 408 after")
    seed: int = Field(7, description="default random seed")
    memory_budget_gb: float = Field(default_factory=default_budget_gb, gt=0, description="memory "
                                    "one offline job (features build, training set, batch join) "
                                    "may hold, in GB; DuckDB gets half and spills beyond it to "
                                    "<data_dir>/tmp/duckdb, the rest is cut into chunks to fit "
                                    "(default: half the machine)")
    snapshot_tick_hours: float = Field(12.0, gt=0, description="hours between the clock-tick "
                                       "snapshots a training set takes of each shipment in "
                                       "flight (the simulated ceiling is estimated at 12)")
    # model monitoring: the prediction log and `shipdelay monitor` (monitoring/)
    prediction_log: bool = Field(True, description="log every prediction of the service, the "
                                 "stream and the batch to <data_dir>/predictions")
    prediction_log_flush_s: float = Field(5.0, gt=0, description="the service writes its "
                                          "logged predictions at least this often")
    prediction_log_flush_rows: int = Field(5_000, ge=1, description="... or once this many "
                                           "are waiting")
    prediction_log_max_rows: int = Field(200_000, ge=1, description="most predictions the "
                                         "service holds unwritten; beyond, new ones are "
                                         "counted as dropped, never waited for")
    monitor_days: int = Field(30, ge=1, description="days `shipdelay monitor` looks back")
    monitor_psi: float = Field(0.25, gt=0, description="drift alarm: population stability "
                               "index of a feature or of P(late) against the reference (the "
                               "nightly shipments before the model was trained)")
    monitor_psi_min_rows: int = Field(500, ge=1, description="fewest predictions a slice needs "
                                      "before its drift is judged")
    gate_ece_tolerance: float = Field(0.005, ge=0, description="promotion gate: how much worse "
                                      "than the champion's the challenger's calibration error "
                                      "may be on the holdout (sampling noise of the ECE)")
    retrain_window_days: float = Field(28.0, gt=0, description="`shipdelay retrain` and the "
                                       "nightly retrain: days of the newest bookings held out "
                                       "for the test window, and as many before them for "
                                       "validation (the model learns from everything older)")
    retrain_gap_days: float = Field(7.0, ge=0, description="... and the days between those "
                                    "windows (labels that arrive later are purged)")
    monitor_reference_min_days: float = Field(28.0, ge=0, description="shortest reference "
                                              "window drift is judged against; a shorter "
                                              "one gives a data alarm instead")
    monitor_log_loss_rise: float = Field(0.15, gt=0, description="performance alarm: realized "
                                         "log loss above the model's validation log loss by "
                                         "this share")
    monitor_min_judged: int = Field(300, ge=1, description="fewest judged predictions before "
                                    "a realized metric can alarm")
    monitor_ece: float = Field(0.05, gt=0, description="calibration alarm: expected "
                               "calibration error of the judged predictions")
    monitor_volume_drop: float = Field(0.5, gt=0, le=1, description="volume alarm: a source's "
                                       "daily inputs below this share of its median day")
    monitor_freshness_h: float = Field(6.0, gt=0, description="freshness alarm: a feature "
                                       "view's newest row older than this at the cut-off")

    # the operations cockpit (cockpit/): money at stake and where the service answers
    penalty_per_late: float = Field(500.0, ge=0, description="penalty of one late delivery, "
                                    "unless the penalties file says otherwise for its customer "
                                    "or service level")
    penalty_per_hour: float = Field(20.0, ge=0, description="penalty of each hour late, "
                                    "unless the penalties file says otherwise")
    penalties_file: Path | None = Field(None, description="CSV of penalty overrides: columns "
                                        "customer_id or service_level, per_late, per_hour")
    cockpit_service_url: str | None = Field(None, description="the prediction service the "
                                            "cockpit asks, e.g. http://127.0.0.1:3000; unset: "
                                            "the nightly scores only")

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, values: dict) -> dict:
        if isinstance(values, dict) and values.get("profile") == "scale":
            for key, value in _SCALE_DEFAULTS.items():
                values.setdefault(key, value)
        return values

    @property
    def lake_dir(self) -> Path:
        """Current lake: a symlink swapped atomically by full rewrites."""
        return self.data_dir / "lake"

    @property
    def predictions_dir(self) -> Path:
        """The prediction log, `day=YYYY-MM-DD/path=<door>/` partitions: beside the lake, not in
        it, so that a full rewrite of the lake never drops what was predicted."""
        return self.data_dir / "predictions"

    @property
    def scores_dir(self) -> Path:
        """The nightly scores table: one `run_date=YYYY-MM-DD` partition per day."""
        return self.data_dir / "scores"

    @property
    def key_file(self) -> Path:
        """The local KMS's master keys: outside the lake, owner-only."""
        return (self.encryption_key_file or self.data_dir / "keys" / "master-keys.json").absolute()

    @property
    def reports_dir(self) -> Path:
        """Human-readable reports (CSV, HTML), one folder per job and day."""
        return self.data_dir / "reports"

    @property
    def tracking_uri(self) -> str:
        """MLflow's tracking and registry store (`shipdelay.backends.tracking_uri`)."""
        from shipdelay.backends import tracking_uri

        return tracking_uri(self)

    @property
    def optuna_storage_url(self) -> str:
        """Optuna's storage (`shipdelay.backends.optuna_storage`)."""
        from shipdelay.backends import optuna_storage

        return optuna_storage(self)

    def masked(self) -> dict[str, object]:
        """Settings as plain values with everything secret-shaped hidden, for printing: secret
        fields, URL passwords, secret URL query parameters, secret-named keys of mappings
        (Kafka's `sasl.password`, `ssl.key.pem`, ...), `password=...` in text, private keys
        (`shipdelay.masking`)."""
        from shipdelay.masking import MASK, mask_value

        out: dict[str, object] = {}
        values = {**self.model_dump(), "lake_dir": str(self.lake_dir),
                  "tracking_uri": self.tracking_uri, "optuna_storage_url": self.optuna_storage_url}
        for name, value in values.items():
            if isinstance(value, SecretStr):
                out[name] = MASK if value.get_secret_value() else None
            else:
                out[name] = mask_value(name, str(value) if isinstance(value, Path) else value)
        return out


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (environment read once)."""
    return Settings()
