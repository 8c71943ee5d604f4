"""Every feature the model reads has a sentence for people: no reason is shown as a raw
`name = value` line, and a time left that has run out reads as the time past it."""

from __future__ import annotations

import pytest

from features.schema import MODEL_FEATURES
from serving.reasons import QUOTES, _sentence


@pytest.mark.parametrize("feature", sorted(c for cols in MODEL_FEATURES.values() for c in cols
                                           if c not in QUOTES))
def test_every_model_feature_reads_as_a_sentence(feature):
    value = "air" if feature.endswith(("_mode", "_region", "level", "event_type")) else 3.0
    words = _sentence(feature, value)
    assert "=" not in words and feature not in words, words


def test_an_overdue_promise_reads_as_hours_past_it():
    assert _sentence("hours_to_promised", -35.2) == "35 h past the promised time"
    assert _sentence("hours_to_promised", 12.0) == "12 h left to the promised time"
    assert _sentence("hours_overdue", 63.3) == "the next planned milestone is 63 h overdue"
