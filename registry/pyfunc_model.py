"""The registered MLflow model: the product's scorer as an `mlflow.pyfunc` model.

`mlflow.pyfunc.load_model("models:/shipdelay-delay@champion")` and `mlflow models serve` answer
what the service's `/predict_features` answers: raw feature values in (one row per shipment,
categories as text, recent_notes as text), and per row the calibrated P(late), the risk band,
the P50 and P90 delay hours, the ETA with its P10-P90 interval, the promised time, three reasons
in plain words, the scan age and staleness flag, as `serving.api.Prediction` fields (times as
ISO-8601 UTC text). It is `serving.scorer.Scorer` on the bundle logged with the model, nothing
else: one scoring path.

Two optional input columns: `shipment_id` labels the answer (default "row-<i>", as the
service), `request_time_s` is the instant the features describe in epoch seconds (default: now,
as the service's clock). `model_version` in the answer is the registry version when the loader
passes it (`model_config={"model_version": "3"}`), else "run <id>" of the training run.

The model is logged from code (`registry/pyfunc_code.py`, no pickle); loading it needs this
project installed (its pip requirements name the libraries, the project is not on an index).
The scoring paths of the product (service, stream, batch) keep loading the native boosters of
the run's `bundle/` folder (`registry.loader`): faster to load, and compiled for the service.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import Array

from features.notes import RECENT_NOTES
from features.schema import CATEGORICAL, TEXT_FEATURES

BUNDLE_ARTIFACT = "bundle"
ID_COLUMN = "shipment_id"
TIME_COLUMN = "request_time_s"
CODE_FILE = Path(__file__).with_name("pyfunc_code.py")
# what the logged environment needs besides this project (which is not on a package index)
REQUIREMENTS = ["lightgbm", "numpy", "pandas", "pyarrow", "pydantic", "scikit-learn"]


class ShipDelayModel(PythonModel):
    """The Scorer of a logged bundle, answering feature rows as `/predict_features` does."""

    def load_context(self, context) -> None:
        from serving.api import MAX_FEATURE_AGE_H
        from serving.scorer import Scorer
        from training.bundle import Bundle

        config = context.model_config or {}
        version = config.get("model_version") or f"run {config.get('run_id', 'unknown')}"
        bundle = Bundle.load(Path(context.artifacts[BUNDLE_ARTIFACT]), version=str(version))
        self.scorer = Scorer(bundle)
        self.max_feature_age_h = float(config.get("max_feature_age_h", MAX_FEATURE_AGE_H))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """One answer per row, in row order (see the module doc)."""
        return answer_rows(self.scorer, pd.DataFrame(model_input), self.max_feature_age_h)


def answer_rows(scorer, rows: pd.DataFrame, max_feature_age_h: float) -> pd.DataFrame:
    """`rows` scored as `/predict_features` scores its rows, as a frame of answers."""
    from serving.api import predictions

    n = len(rows)
    labels = [f"row-{i}" for i in range(n)]
    if ID_COLUMN in rows:
        labels = [str(v) if isinstance(v, str) and v else label
                  for v, label in zip(rows[ID_COLUMN].tolist(), labels)]
    asked = (pd.to_numeric(rows[TIME_COLUMN], errors="coerce").to_numpy(float)
             if TIME_COLUMN in rows else np.full(n, np.nan))
    asked = np.where(np.isfinite(asked), asked, time.time())
    vectors = {c: _column(rows, c) for c in scorer.inputs}
    vectors |= {ID_COLUMN: np.asarray(labels, dtype=object), TIME_COLUMN: asked}
    scored = scorer.score_columns(vectors, reasons_from=0.0)  # what if: every row's reasons
    items = predictions(scored, vectors, max_feature_age_h)
    answers = pd.DataFrame([item.model_dump(mode="json") for item in items], index=rows.index)
    # None where the service's JSON says null (a float column would hold NaN, which MLflow's
    # server writes as the invalid JSON token NaN)
    return answers.astype(object).where(answers.notna(), None)


def _column(rows: pd.DataFrame, name: str) -> np.ndarray:
    """A column as the service's frame holds it: text as objects (missing: None), numbers as
    floats (missing: NaN); absent: all missing (MLflow's schema check names a required one)."""
    if name not in rows:
        return np.full(len(rows), None if _is_text(name) else np.nan, dtype=object)
    values = rows[name]
    if _is_text(name):
        return np.array([v if isinstance(v, str) else None for v in values.tolist()],
                        dtype=object)
    return pd.to_numeric(values, errors="coerce").to_numpy(float)


def _is_text(name: str) -> bool:
    return name in CATEGORICAL or name in TEXT_FEATURES or name == RECENT_NOTES


def input_schema(inputs: list[str], whole: set[str] = frozenset()) -> Schema:
    """Every input the model reads, then the two optional columns. Text features are string,
    numbers double (nulls allowed), except `whole`: the numbers training frames hold as
    integers, never missing (a booking's legs, parcels, weekday...), which are long, so that
    the product's own frames pass MLflow's type check as they are (it refuses an int64 column
    for a double; its server converts JSON numbers itself)."""
    def kind(c: str) -> str:
        return "string" if _is_text(c) else "long" if c in whole else "double"

    return Schema([*(ColSpec(kind(c), c) for c in inputs),
                   ColSpec("string", ID_COLUMN, required=False),
                   ColSpec("double", TIME_COLUMN, required=False)])


def whole_numbers(frame: pd.DataFrame, inputs: list[str]) -> set[str]:
    """The numeric inputs `frame` holds as integers."""
    return {c for c in inputs if c in frame and not _is_text(c)
            and pd.api.types.is_integer_dtype(frame[c].dtype)}


def example_rows(frame: pd.DataFrame, inputs: list[str], rows: int = 5) -> pd.DataFrame:
    """`rows` rows spread over a training or scoring frame as a caller sends them: raw values
    (integers where the frame holds them), text for categories (never encoded), and the
    instant each describes."""
    head = frame.iloc[::max(1, len(frame) // rows)].head(rows)
    whole = whole_numbers(frame, inputs)
    out = pd.DataFrame({c: _column(head, c) for c in inputs}, index=range(len(head)))
    for c in inputs:
        if not _is_text(c):
            out[c] = head[c].to_numpy() if c in whole else out[c].astype(float)
    if ID_COLUMN in head:
        out[ID_COLUMN] = head[ID_COLUMN].astype(str).to_numpy()
    if "as_of" in head:
        out[TIME_COLUMN] = epoch_seconds(head["as_of"])
    return out


def output_schema() -> Schema:
    """The answer's columns: `serving.api.Prediction`'s fields as its JSON holds them (times as
    ISO-8601 text, reasons a list of text); those that may be null are not required."""
    from serving.api import Prediction

    schema = Prediction.model_json_schema()
    columns = []
    for name, spec in schema["properties"].items():
        kinds = [k for k in spec.get("anyOf", [spec]) if k.get("type") != "null"]
        kind = kinds[0] if kinds else {"type": "string"}
        nullable = len(kinds) < len(spec.get("anyOf", [spec])) or name not in schema.get(
            "required", [])
        if kind.get("type") == "array":
            columns.append(ColSpec(Array("string"), name, required=not nullable))
        else:
            columns.append(ColSpec(_JSON_TYPES.get(kind.get("type"), "string"), name,
                                   required=not nullable))
    return Schema(columns)


_JSON_TYPES = {"boolean": "boolean", "number": "double", "integer": "long", "string": "string"}


def epoch_seconds(times) -> np.ndarray:
    """Instants (any datetime unit; naive ones are UTC) as epoch seconds."""
    stamps = pd.to_datetime(pd.Series(times), utc=True)
    return ((stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(float)


def log_scorer_model(bundle_folder: Path, *, name: str, inputs: list[str], example: pd.DataFrame,
                     run_id: str, metadata: dict | None = None):
    """Log the bundle in `bundle_folder` as the pyfunc model `name` of the active run (`inputs`:
    the features it reads); returns MLflow's ModelInfo."""
    signature = ModelSignature(inputs=input_schema(inputs, whole_numbers(example, inputs)),
                               outputs=output_schema())
    with tempfile.TemporaryDirectory() as scratch:
        # MLflow copies the code file with its mode bits: a fresh copy takes the process's file
        # mode (owner-only where the product keeps its files private), not the checkout's
        code = Path(scratch) / CODE_FILE.name
        code.write_bytes(CODE_FILE.read_bytes())
        return _log(name, code, bundle_folder, run_id, signature, example, metadata)


def _log(name: str, code: Path, bundle_folder: Path, run_id: str, signature, example, metadata):
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(code),
        artifacts={BUNDLE_ARTIFACT: str(bundle_folder)},
        # model_version: "" until a loader names it (`model_config` at load time)
        model_config={"run_id": run_id, "model_version": ""},
        signature=signature,
        input_example=example,
        metadata=metadata,
        # named, so that MLflow does not import the model in a subprocess to infer them
        pip_requirements=REQUIREMENTS,
    )
