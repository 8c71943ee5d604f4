"""The five entities a feature can be about."""

from __future__ import annotations

from feast import Entity, ValueType

from features.schema import ENTITY_KEYS


def entities() -> dict[str, Entity]:
    return {name: Entity(name=name, join_keys=[key], value_type=ValueType.STRING,
                         description=f"a {name}, keyed by {key}")
            for name, key in ENTITY_KEYS.items()}
