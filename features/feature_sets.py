"""Feature sets: the FeatureService's features minus whole groups a training run leaves out.

A data scientist drops groups (`features.schema.feature_groups`: calendar, weather, notes, ...)
for one run, e.g. when a company's clock times mean nothing. The FeatureService stays the one
list that serving reads, so a feature set is a FeatureService of its own, named after what it
leaves out: `delay_model_v1` keeps everything, `delay_model_v1__no_calendar_weather` drops the
calendar and weather groups (group names in their canonical order, so the same choice always
gets the same name). Training applies that service to the Feast registry next to the full one;
the model records its name and features, and serving checks the model against it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from features.schema import (
    FEATURE_GROUP_NAMES,
    FEATURE_SERVICE,
    MODEL_FEATURES,
    TEXT_FEATURES,
    feature_groups,
    model_feature_names,
)

SEPARATOR = "__no_"


class UnknownFeatureGroup(ValueError):
    """A group name that `features.schema.feature_groups` does not know."""


@dataclass(frozen=True)
class FeatureSet:
    """The FeatureService features a model is trained on, and the service's name."""

    dropped: tuple[str, ...] = ()

    @property
    def service(self) -> str:
        return FEATURE_SERVICE + (SEPARATOR + "_".join(self.dropped) if self.dropped else "")

    @property
    def features(self) -> list[str]:
        """The FeatureService features kept, in FeatureService order."""
        gone = {f for g in self.dropped for f in feature_groups()[g]}
        return [f for f in model_feature_names() if f not in gone]

    @property
    def model_inputs(self) -> list[str]:
        """The model's inputs: the kept features, text replaced by the numbers read from it
        (as `features.schema.model_input_names`)."""
        return [f for c in self.features for f in TEXT_FEATURES.get(c, [c])]

    def by_view(self) -> dict[str, list[str]]:
        """View name -> its kept features (views left empty are left out)."""
        kept = set(self.features)
        out = {view: [c for c in cols if c in kept] for view, cols in MODEL_FEATURES.items()}
        return {view: cols for view, cols in out.items() if cols}

    @property
    def is_full(self) -> bool:
        return not self.dropped


def choose(drop: str | Iterable[str] | None = None) -> FeatureSet:
    """The feature set without the groups in `drop` (names, or one comma-separated text).

    Raises UnknownFeatureGroup naming the valid groups, and ValueError when nothing would be
    left."""
    if drop is None:
        names: list[str] = []
    elif isinstance(drop, str):
        names = [n.strip() for n in drop.split(",") if n.strip()]
    else:
        names = [str(n).strip() for n in drop if str(n).strip()]
    unknown = [n for n in names if n not in FEATURE_GROUP_NAMES]
    if unknown:
        raise UnknownFeatureGroup(
            f"unknown feature group(s): {', '.join(unknown)}; the groups are "
            f"{', '.join(FEATURE_GROUP_NAMES)}")
    empty = [g for g, cols in feature_groups().items() if not cols]
    chosen = FeatureSet(tuple(g for g in FEATURE_GROUP_NAMES if g in names and g not in empty))
    if not chosen.features:
        raise ValueError("dropping every feature group leaves the model nothing to learn from; "
                         "keep at least one group")
    return chosen


def from_service(name: str) -> FeatureSet:
    """The feature set a FeatureService name stands for (ValueError for another name)."""
    if name == FEATURE_SERVICE:
        return FeatureSet()
    prefix = FEATURE_SERVICE + SEPARATOR
    if not name.startswith(prefix):
        raise ValueError(f"'{name}' is not a feature set of FeatureService '{FEATURE_SERVICE}'")
    rest, groups = name[len(prefix):], []
    # group names hold underscores themselves ("on_demand"): match them greedily, in order
    for group in FEATURE_GROUP_NAMES:
        if rest == group or rest.startswith(group + "_"):
            groups.append(group)
            rest = rest[len(group) + 1:]
    if rest:
        raise ValueError(f"'{name}' names an unknown feature group: '{rest}'")
    return FeatureSet(tuple(groups))
