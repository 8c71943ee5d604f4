"""Adapters: real data sources turned into the import contract."""
