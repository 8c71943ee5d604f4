"""Feast's DuckDB offline store, reading the encrypted offline tables.

Feast's own reader (`ibis.read_parquet`, DuckDB underneath) cannot unwrap keys a KMS guards,
so this store reads each file source through `shipdelay.parquet_io` instead: a decrypting Arrow
dataset registered on the DuckDB connection Feast's ibis queries run on (projections and filters
are pushed into it). Everything else (point-in-time joins, materialization) is Feast's.
With encryption off it is Feast's DuckDB store unchanged. Feast finds the store class by the
config class's name (`EncryptedDuckDBOfflineStore`, below).
"""

from __future__ import annotations

import uuid

import ibis
from feast.infra.offline_stores import duckdb as feast_duckdb
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore, DuckDBOfflineStoreConfig
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.ibis import (
    get_historical_features_ibis,
    pull_all_from_table_or_query_ibis,
    pull_latest_from_table_or_query_ibis,
)
from pydantic import StrictStr

from shipdelay import parquet_io
from shipdelay.crypto import active
from shipdelay.memory import limit_connection


class EncryptedDuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    """The DuckDB offline store's settings; the store decrypts what it reads."""

    type: StrictStr = "features.offline_store.EncryptedDuckDBOfflineStore"


def read_source(data_source, repo_path: str):
    """An ibis table over a file source's Parquet files, decrypted; the DuckDB connection
    Feast's queries run on keeps within the memory budget (`shipdelay.memory`)."""
    backend = ibis.get_backend()  # the DuckDB connection Feast's queries run on
    limit_connection(backend.con)
    if active() is None or not isinstance(data_source, FileSource):
        return feast_duckdb._read_data_source(data_source, repo_path)
    name = f"feast_{uuid.uuid4().hex[:12]}"
    backend.con.register(name, parquet_io.duckdb_dataset(parquet_io.paths(data_source.path)))
    return backend.table(name)


def offline_store_config() -> DuckDBOfflineStoreConfig:
    """The offline store for the process's encryption setting."""
    return EncryptedDuckDBOfflineStoreConfig() if active() else DuckDBOfflineStoreConfig()


def _options(config) -> dict:
    return {"data_source_reader": read_source,
            "data_source_writer": feast_duckdb._write_data_source,
            "staging_location": config.offline_store.staging_location,
            "staging_location_endpoint_override":
                config.offline_store.staging_location_endpoint_override}


class EncryptedDuckDBOfflineStore(DuckDBOfflineStore):
    """Feast's DuckDB offline store with `read_source` as its reader."""

    @staticmethod
    def pull_latest_from_table_or_query(config, data_source, join_key_columns,
                                        feature_name_columns, timestamp_field,
                                        created_timestamp_column, start_date, end_date):
        return pull_latest_from_table_or_query_ibis(
            config=config, data_source=data_source, join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns, timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column, start_date=start_date,
            end_date=end_date, **_options(config))

    @staticmethod
    def get_historical_features(config, feature_views, feature_refs, entity_df, registry,
                                project, full_feature_names=False,
                                filter_by_created_timestamp=False):
        return get_historical_features_ibis(
            config=config, feature_views=feature_views, feature_refs=feature_refs,
            entity_df=entity_df, registry=registry, project=project,
            full_feature_names=full_feature_names,
            filter_by_created_timestamp=filter_by_created_timestamp, **_options(config))

    @staticmethod
    def pull_all_from_table_or_query(config, data_source, join_key_columns,
                                     feature_name_columns, timestamp_field,
                                     created_timestamp_column=None, start_date=None,
                                     end_date=None):
        return pull_all_from_table_or_query_ibis(
            config=config, data_source=data_source, join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns, timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column, start_date=start_date,
            end_date=end_date, **_options(config))

    @staticmethod
    def offline_write_batch(config, feature_view, table, progress):
        raise RuntimeError("Feast's offline writes would store plaintext: append offline rows "
                           "with features.offline.append_parts, which encrypts them")
