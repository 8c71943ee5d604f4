"""The Now list's filter, run on the server: the Dash DataTable's filter language (what its
column boxes write, e.g. `{band} scontains high && {p_late_pct} s> 50`, and what a click on a
hub writes, `{hub} = "Rotterdam" || {hubs_ahead} contains "Rotterdam"`) parsed once and applied
to whole columns of a pandas frame.

Understood: `&&`/`and`, `||`/`or`, `!`, parentheses; the comparisons `=`/`eq`, `!=`/`ne`,
`<`/`lt`, `<=`/`le`, `>`/`gt`, `>=`/`ge`, `contains`, `datestartswith`, each optionally
prefixed by `s` (case-sensitive, the default) or `i` (case-insensitive); `is blank`, `is nil`,
`is num`, `is str`. Values are bare words or numbers, or quoted with ", ' or `. On a numeric
column a number compares as a number; on a text column everything compares as text. A missing
value matches only `!=` and `is blank`/`is nil`.
"""

from __future__ import annotations

import operator
import re

import numpy as np
import pandas as pd

RELATIONS = {"=": "eq", "eq": "eq", "!=": "ne", "ne": "ne", "<": "lt", "lt": "lt",
             "<=": "le", "le": "le", ">": "gt", "gt": "gt", ">=": "ge", "ge": "ge",
             "contains": "contains", "datestartswith": "startswith"}
COMPARE = {"eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le,
           "gt": operator.gt, "ge": operator.ge}
UNARY = ("blank", "nil", "num", "str")
_TOKEN = re.compile(r"""\s*(?:
    (?P<field>\{[^}]*\})
  | (?P<quoted>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`(?:\\.|[^`\\])*`)
  | (?P<punct>&&|\|\||!=|<=|>=|[()!=<>])
  | (?P<word>[^\s()"'`{}]+)
)""", re.VERBOSE)


class FilterError(ValueError):
    """A filter the list does not understand (the message says where)."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        found = _TOKEN.match(text, pos)
        if found is None or found.end() == pos:
            raise FilterError(f"cannot read the filter from “{text[pos:pos + 20]}”")
        kind = found.lastgroup
        value = found.group(kind)
        if kind == "quoted":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        elif kind == "field":
            value = value[1:-1]
        out.append((kind, value))
        pos = found.end()
    return out


class _Parser:
    """Recursive descent over the tokens into nested tuples:
    ("or", a, b), ("and", a, b), ("not", a), ("cmp", field, op, case, value), ("is", field, what)."""

    def __init__(self, tokens):
        self.tokens, self.at = tokens, 0

    def peek(self):
        return self.tokens[self.at] if self.at < len(self.tokens) else (None, None)

    def take(self):
        token = self.peek()
        self.at += 1
        return token

    def parse(self):
        tree = self.either()
        if self.at != len(self.tokens):
            raise FilterError(f"unexpected “{self.peek()[1]}” in the filter")
        return tree

    def either(self):
        left = self.both()
        while self.peek()[1] in ("||", "or"):
            self.take()
            left = ("or", left, self.both())
        return left

    def both(self):
        left = self.unary()
        while self.peek()[1] in ("&&", "and"):
            self.take()
            left = ("and", left, self.unary())
        return left

    def unary(self):
        kind, value = self.peek()
        if value == "!":
            self.take()
            return ("not", self.unary())
        if value == "(":
            self.take()
            inner = self.either()
            if self.take()[1] != ")":
                raise FilterError("a parenthesis of the filter is not closed")
            return inner
        if kind != "field":
            raise FilterError(f"the filter expects a {{column}} where it reads “{value}”")
        self.take()
        return self.comparison(value)

    def comparison(self, field: str):
        kind, word = self.take()
        if word == "is":
            what = self.take()[1]
            if what not in UNARY:
                raise FilterError(f"the filter cannot test “is {what}”")
            return ("is", field, what)
        case = "s"
        if kind == "word" and word[:1] in ("s", "i") and word[1:] in RELATIONS \
                and word not in RELATIONS:
            case, word = word[0], word[1:]
        if word not in RELATIONS:
            raise FilterError(f"the filter cannot compare with “{word}”")
        vkind, value = self.take()
        if vkind not in ("word", "quoted"):
            raise FilterError(f"the filter needs a value after {{{field}}} {word}")
        return ("cmp", field, RELATIONS[word], case, value)


def parse(text: str | None):
    """The filter's tree, or None for no filter. Raises FilterError."""
    if not text or not text.strip():
        return None
    return _Parser(_tokens(text)).parse()


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _compare(column: pd.Series, op: str, case: str, value: str) -> np.ndarray:
    missing = column.isna().to_numpy()
    number = _number(value)
    if pd.api.types.is_numeric_dtype(column) and op != "contains" and op != "startswith":
        if number is None:
            hit = np.zeros(len(column), bool)
        else:
            hit = COMPARE[op](column.to_numpy(dtype=float), number)
    else:
        text = column.astype(object).where(~missing, "").astype(str)
        if pd.api.types.is_numeric_dtype(column):  # "contains 9" on a number: its digits
            text = column.map(lambda v: f"{v:g}").where(~missing, "")
        if case == "i":
            text, value = text.str.lower(), value.lower()
        if op == "contains":
            hit = text.str.contains(value, regex=False).to_numpy()
        elif op == "startswith":
            hit = text.str.startswith(value).to_numpy()
        else:
            hit = COMPARE[op](text.to_numpy(dtype=object), value).astype(bool)
    return np.where(missing, op == "ne", hit)


def _is(column: pd.Series, what: str) -> np.ndarray:
    missing = column.isna().to_numpy()
    if what == "nil":
        return missing
    if what == "blank":
        return missing | (column.astype(object).where(~missing, "").astype(str).str.strip()
                          == "").to_numpy()
    numeric = pd.api.types.is_numeric_dtype(column)
    return ~missing & (numeric if what == "num" else not numeric)


def evaluate(tree, frame: pd.DataFrame) -> np.ndarray:
    """The rows of `frame` the parsed filter keeps (a boolean array). Raises FilterError for a
    column the frame does not have."""
    if tree is None:
        return np.ones(len(frame), bool)
    kind = tree[0]
    if kind == "or":
        return evaluate(tree[1], frame) | evaluate(tree[2], frame)
    if kind == "and":
        return evaluate(tree[1], frame) & evaluate(tree[2], frame)
    if kind == "not":
        return ~evaluate(tree[1], frame)
    field = tree[1]
    if field not in frame:
        raise FilterError(f"the list has no column “{field}”")
    if kind == "is":
        return _is(frame[field], tree[2])
    return _compare(frame[field], tree[2], tree[3], tree[4])
