"""Feast definitions only: entities, sources, feature views, on-demand views, feature services.

Nothing here runs at import time: each module exposes functions that build the definitions for a
given offline folder, so paths come from Settings and `features.build` applies them.
"""
