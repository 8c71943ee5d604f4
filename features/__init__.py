"""Feature transforms, the feature pipeline and Feast access.

Feast decorates its classes with typeguard's `@typechecked`, which parses and recompiles the
source of every decorated function when Feast is imported: about 4.5 s of every process start on
a 2-core machine (`import serving.stream`: 9.7 s with, 5.2 s without). shipdelay hands Feast only
objects it builds itself, so Feast's own functions are left unchecked; every other user of
typeguard keeps its checks. Nothing else happens at import (Feast imports `features/repo/`).
"""

from __future__ import annotations

import typeguard

_typechecked = typeguard.typechecked


def _typechecked_except_feast(target=None, **options):
    if target is None:
        return lambda t: _typechecked_except_feast(t, **options)
    module = getattr(getattr(target, "__func__", target), "__module__", None) or ""
    if module == "feast" or module.startswith("feast."):
        return target
    return _typechecked(target, **options)


typeguard.typechecked = _typechecked_except_feast
