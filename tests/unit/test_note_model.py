"""The note model learns what notes say from the data, in words no list ever held: German and
invented notes that precede late deliveries in a small hand-made training window score high on
held-out shipments, misspelt variants included; training rows get out-of-fold scores; the model
survives its files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from features.notes import MAX_NOTES, split_entries
from training.note_model import NoteModel, cross_fit, examples, folds

# what drivers of a made-up company write: delays in German and in its own jargon
DELAY = ["Verspätung wegen Sturm", "Zoll hält Sendung fest", "Stau am Hafen, Wartezeit",
         "LKW Panne auf A7", "grumbo vorlag am tor", "flinzer sperre nordkai"]
ROUTINE = ["Ware verladen", "Sendung gescannt", "Abfahrt planmäßig", "zibbo klar",
           "Palette vollständig", "übergeben an Fahrer"]
# held-out shipments write them as people do: misspelt, shouted, abbreviated
DELAY_VARIANTS = ["Verspaetung wg. Sturm", "ZOLL HAELT SENDUNG", "Stau am Hafn",
                  "LKW-Pane A7", "grumbo vorlag", "flinzer sperre"]
ROUTINE_VARIANTS = ["Ware verlden", "SENDUNG GESCANNT", "Abfahrt planmaessig", "zibbo klar!",
                    "Palete vollständig", "übergeben an Fahrer."]


def hand_made(n: int, seed: int, delay=DELAY, routine=ROUTINE) -> pd.DataFrame:
    """Snapshots of n shipments: late ones mostly wrote a delay note among routine ones, on-time
    ones mostly routine notes only; 15% of each the other way round (notes are not truth)."""
    rng = np.random.default_rng(seed)
    late = rng.random(n) < 0.35
    rows = []
    for i in range(n):
        notes = list(rng.choice(routine, int(rng.integers(1, 4))))
        if late[i] != (rng.random() < 0.15):
            notes.insert(int(rng.integers(0, len(notes) + 1)), rng.choice(delay))
        stamped = [f"2025-10-{1 + k:02d}T08:00:00Z {t}" for k, t in enumerate(notes)][::-1]
        for s in range(1, len(stamped) + 1):  # one snapshot per note seen so far
            rows.append({"shipment_id": f"S{seed}-{i}", "is_late": int(late[i]),
                         "recent_notes": "\n".join(stamped[-s:])})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def fitted():
    train = hand_made(400, seed=1)
    return train, NoteModel.fit_frame(train)


def test_notes_in_unlisted_words_carry_signal_on_held_out_shipments(fitted):
    _, model = fitted
    for delay, routine in ((DELAY, ROUTINE), (DELAY_VARIANTS, ROUTINE_VARIANTS)):
        held = hand_made(300, seed=2, delay=delay, routine=routine)
        held = held.drop_duplicates("shipment_id", keep="last")  # every note seen
        risk = model.features(held["recent_notes"])["note_risk"]
        auc = roc_auc_score(held["is_late"], risk)
        assert auc > 0.75, (delay[0], auc)  # 15% of the labels contradict the notes
    words = model.logits(np.array([*DELAY_VARIANTS, *ROUTINE_VARIANTS], dtype=object))
    assert words[:6].min() > words[6:].max()


def test_training_rows_get_out_of_fold_scores(fitted):
    train, model = fitted
    # a note only one shipment ever wrote says nothing about that shipment out of fold
    lone = train.copy()
    odd = lone["shipment_id"] == lone["shipment_id"].iloc[0]
    lone.loc[odd, "recent_notes"] = "2025-10-09T00:00:00Z ǂǃǁ ʘʘ ǂǃǁ"
    lone.loc[odd, "is_late"] = 1
    in_sample = NoteModel.fit_frame(lone).features(lone.loc[odd, "recent_notes"])["note_risk"]
    out_of_fold = cross_fit(lone)["note_risk"][odd.to_numpy()]
    assert (in_sample > out_of_fold + 0.15).all()
    # folds keep a shipment's snapshots together, whatever the row order
    f = folds(train["shipment_id"])
    assert (pd.Series(f).groupby(train["shipment_id"].to_numpy()).nunique() == 1).all()
    shuffled = train.sample(frac=1.0, random_state=0)
    assert (folds(shuffled["shipment_id"]) == f[shuffled.index.to_numpy()]).all()
    assert 0.7 < model.oof_auc < 1.0


def test_examples_count_a_shipment_once_per_text():
    frame = pd.DataFrame({"shipment_id": ["A", "A", "B"], "is_late": [1, 1, 0],
                          "recent_notes": ["2025-10-02T00:00:00Z x\n2025-10-01T00:00:00Z y",
                                           "2025-10-01T00:00:00Z y", "y"]})
    texts, late = examples(frame)
    assert sorted(zip(texts.tolist(), late.tolist())) == [("x", 1.0), ("y", 0.0), ("y", 1.0)]


def test_features_of_each_row(fitted):
    _, model = fitted
    two = "2025-10-02T00:00:00Z Sendung gescannt\n2025-10-01T00:00:00Z Verspätung wegen Sturm"
    states = pd.Series([two, "", None, 3.0, "Stau am Hafen"], dtype=object)
    got = model.features(states)
    assert got["note_count"].tolist() == [2, 0, 0, 0, 1]
    assert got["note_latest_text"].tolist() == ["Sendung gescannt", "", "", "", "Stau am Hafen"]
    assert got["note_risk_text"].tolist() == ["Verspätung wegen Sturm", "", "", "",
                                              "Stau am Hafen"]
    assert got["note_risk"][0] > got["note_latest_risk"][0]
    assert np.isnan(got["note_risk"][1:4]).all() and np.isnan(got["note_latest_risk"][1:4]).all()
    # the cache changes nothing: a fresh model from the same weights reads the same
    again = NoteModel(model.coef, model.intercept).features(states)
    np.testing.assert_array_equal(again["note_risk"], got["note_risk"])


def test_saved_and_loaded_reads_the_same(fitted, tmp_path):
    train, model = fitted
    model.save(tmp_path)
    loaded = NoteModel.load(tmp_path)
    a, b = model.features(train["recent_notes"]), loaded.features(train["recent_notes"])
    for c in ("note_risk", "note_latest_risk", "note_count"):
        np.testing.assert_array_equal(a[c], b[c])
    assert loaded.oof_auc == model.oof_auc and NoteModel.load(tmp_path / "none") is None


def test_no_notes_or_one_class_fit_a_constant():
    assert NoteModel.fit(np.array([], dtype=object), np.array([])).logits(
        np.array(["x"], dtype=object))[0] == 0.0
    rows, _ = split_entries(pd.Series(["\n".join(["a"] * MAX_NOTES)]))
    assert len(rows) == MAX_NOTES
    model = NoteModel.fit(np.array(["a", "b"], dtype=object), np.array([1.0, 1.0]))
    assert model.logits(np.array(["a", "zzz"], dtype=object)).tolist() == [model.intercept] * 2
