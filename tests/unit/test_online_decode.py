"""A few serialized Feast values (one shipment's row) are decoded one by one in Python, many at
once with numpy: on values of every kind, and on bytes nobody would write, both give the same."""

from __future__ import annotations

import numpy as np
from feast.protos.feast.types.Value_pb2 import FloatList, Value

from features.online_decode import FEW, _decode_few, _decode_many, decode


def _values(rng: np.random.Generator) -> list[bytes]:
    made = [b"", Value().SerializeToString(),
            Value(double_val=float("nan")).SerializeToString(),
            Value(double_val=-0.0).SerializeToString(),
            Value(string_val="").SerializeToString(), Value(string_val="ü" * 63).SerializeToString(),
            Value(string_val="z" * 200).SerializeToString(), Value(bool_val=True).SerializeToString(),
            Value(float_list_val=FloatList(val=[1.0, 2.0])).SerializeToString()]
    for v in [0, 1, -1, 127, 128, 2**31 - 1, -(2**31), 2**53 - 1, 2**53, -(2**53) + 1,
              -(2**53), 2**63 - 1, -(2**63)]:
        made += [Value(int64_val=v).SerializeToString()]
        if -(2**31) <= v < 2**31:
            made += [Value(int32_val=v).SerializeToString()]
    made += [Value(double_val=x).SerializeToString() for x in rng.normal(0, 1e6, 20)]
    made += [Value(string_val=t).SerializeToString() for t in ("air", "HUB-7", "日本", "a\nb")]
    # bytes nobody would write: cut short, overlong varints, lengths that lie, random noise
    made += [b"\x29\x00\x00", b"\x20", b"\x20\x80", b"\x20\xff" * 6, b"\x20" + b"\x80" * 10 + b"\x01",
             b"\x12\x05ab", b"\x12\x01ab", b"\x18\x01\x01", b"\x29" + bytes(9)]
    made += [bytes(rng.integers(0, 256, int(rng.integers(1, 14))).astype(np.uint8))
             for _ in range(200)]
    return made


def _decodable(blob: bytes) -> bool:
    """Random bytes may claim to be text that is not UTF-8: both paths raise on those."""
    try:
        _decode_many([blob])
        return True
    except UnicodeDecodeError:
        return False


def test_few_values_decode_as_many_do():
    rng = np.random.default_rng(3)
    values = [b for b in _values(rng) if _decodable(b)]
    for trial in range(300):
        picked = [values[i] for i in rng.integers(0, len(values), int(rng.integers(1, FEW + 1)))]
        few, many = _decode_few(picked), _decode_many(picked)
        np.testing.assert_array_equal(few[0], many[0])  # NaN where NaN, -0.0 as -0.0's value
        assert np.signbit(few[0]).tolist() == np.signbit(many[0]).tolist()
        assert few[1].tolist() == many[1].tolist(), picked
        assert few[2].tolist() == many[2].tolist(), picked
        assert few[1].dtype == object and few[2].dtype == np.int64 and few[0].dtype == float
    assert [len(a) for a in decode([])] == [0, 0, 0]
