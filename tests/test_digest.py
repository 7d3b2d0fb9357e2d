"""The digest of a call: RFC 8785 (JCS) canonical JSON, checked against the published
vectors, and the digest's shape.

Vectors transcribed from the RFC's companion test data (github.com/cyberphone/
json-canonicalization, testdata/input and testdata/outhex: input documents and the UTF-8
bytes of their canonical form) and RFC 8785 Appendix B (IEEE-754 doubles and their
canonical number text).
"""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from approvalctl.digest import DigestError, canonical, digest, short

JCS_FILES = [
    ('arrays',
     '[\n'
     '  56,\n'
     '  {\n'
     '    "d": true,\n'
     '    "10": null,\n'
     '    "1": [ ]\n'
     '  }\n'
     ']\n',
     '5b 35 36 2c 7b 22 31 22 3a 5b 5d 2c 22 31 30 22 3a 6e 75 6c 6c 2c 22 64 22 3a 74 72 '
     '75 65 7d 5d'),
    ('french',
     '{\n'
     '  "peach": "This sorting order",\n'
     '  "péché": "is wrong according to French",\n'
     '  "pêche": "but canonicalization MUST",\n'
     '  "sin":   "ignore locale"\n'
     '}\n',
     '7b 22 70 65 61 63 68 22 3a 22 54 68 69 73 20 73 6f 72 74 69 6e 67 20 6f 72 64 65 72 '
     '22 2c 22 70 c3 a9 63 68 c3 a9 22 3a 22 69 73 20 77 72 6f 6e 67 20 61 63 63 6f 72 64 '
     '69 6e 67 20 74 6f 20 46 72 65 6e 63 68 22 2c 22 70 c3 aa 63 68 65 22 3a 22 62 75 74 '
     '20 63 61 6e 6f 6e 69 63 61 6c 69 7a 61 74 69 6f 6e 20 4d 55 53 54 22 2c 22 73 69 6e '
     '22 3a 22 69 67 6e 6f 72 65 20 6c 6f 63 61 6c 65 22 7d'),
    ('structures',
     '{\n'
     '  "1": {"f": {"f": "hi","F": 5} ,"\\n": 56.0},\n'
     '  "10": { },\n'
     '  "": "empty",\n'
     '  "a": { },\n'
     '  "111": [ {"e": "yes","E": "no" } ],\n'
     '  "A": { }\n'
     '}',
     '7b 22 22 3a 22 65 6d 70 74 79 22 2c 22 31 22 3a 7b 22 5c 6e 22 3a 35 36 2c 22 66 22 '
     '3a 7b 22 46 22 3a 35 2c 22 66 22 3a 22 68 69 22 7d 7d 2c 22 31 30 22 3a 7b 7d 2c 22 '
     '31 31 31 22 3a 5b 7b 22 45 22 3a 22 6e 6f 22 2c 22 65 22 3a 22 79 65 73 22 7d 5d 2c '
     '22 41 22 3a 7b 7d 2c 22 61 22 3a 7b 7d 7d'),
    ('unicode',
     '{\n'
     '  "Unnormalized Unicode":"A\\u030a"\n'
     '}\n',
     '7b 22 55 6e 6e 6f 72 6d 61 6c 69 7a 65 64 20 55 6e 69 63 6f 64 65 22 3a 22 41 cc 8a '
     '22 7d'),
    ('values',
     '{\n'
     '  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],\n'
     '  "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",\n'
     '  "literals": [null, true, false]\n'
     '}',
     '7b 22 6c 69 74 65 72 61 6c 73 22 3a 5b 6e 75 6c 6c 2c 74 72 75 65 2c 66 61 6c 73 65 '
     '5d 2c 22 6e 75 6d 62 65 72 73 22 3a 5b 33 33 33 33 33 33 33 33 33 2e 33 33 33 33 33 '
     '33 33 2c 31 65 2b 33 30 2c 34 2e 35 2c 30 2e 30 30 32 2c 31 65 2d 32 37 5d 2c 22 73 '
     '74 72 69 6e 67 22 3a 22 e2 82 ac 24 5c 75 30 30 30 66 5c 6e 41 27 42 5c 22 5c 5c 5c '
     '5c 5c 22 2f 22 7d'),
    ('weird',
     '{\n'
     '  "\\u20ac": "Euro Sign",\n'
     '  "\\r": "Carriage Return",\n'
     '  "\\u000a": "Newline",\n'
     '  "1": "One",\n'
     '  "\\u0080": "Control\\u007f",\n'
     '  "\\ud83d\\ude02": "Smiley",\n'
     '  "\\u00f6": "Latin Small Letter O With Diaeresis",\n'
     '  "\\ufb33": "Hebrew Letter Dalet With Dagesh",\n'
     '  "</script>": "Browser Challenge"\n'
     '}\n',
     '7b 22 5c 6e 22 3a 22 4e 65 77 6c 69 6e 65 22 2c 22 5c 72 22 3a 22 43 61 72 72 69 61 '
     '67 65 20 52 65 74 75 72 6e 22 2c 22 31 22 3a 22 4f 6e 65 22 2c 22 3c 2f 73 63 72 69 '
     '70 74 3e 22 3a 22 42 72 6f 77 73 65 72 20 43 68 61 6c 6c 65 6e 67 65 22 2c 22 c2 80 '
     '22 3a 22 43 6f 6e 74 72 6f 6c 7f 22 2c 22 c3 b6 22 3a 22 4c 61 74 69 6e 20 53 6d 61 '
     '6c 6c 20 4c 65 74 74 65 72 20 4f 20 57 69 74 68 20 44 69 61 65 72 65 73 69 73 22 2c '
     '22 e2 82 ac 22 3a 22 45 75 72 6f 20 53 69 67 6e 22 2c 22 f0 9f 98 82 22 3a 22 53 6d '
     '69 6c 65 79 22 2c 22 ef ac b3 22 3a 22 48 65 62 72 65 77 20 4c 65 74 74 65 72 20 44 '
     '61 6c 65 74 20 57 69 74 68 20 44 61 67 65 73 68 22 7d'),
]

#: RFC 8785 Appendix B: (IEEE-754 bits, canonical text).
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize("name,text,outhex", JCS_FILES, ids=[v[0] for v in JCS_FILES])
def test_published_canonical_forms(name, text, outhex):
    assert canonical(json.loads(text)) == bytes.fromhex(outhex)


@pytest.mark.parametrize("bits,expected", APPENDIX_B, ids=[v[0] for v in APPENDIX_B])
def test_appendix_b_numbers(bits, expected):
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    assert canonical(value) == expected.encode()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 2**53,
                                   -(2**53), 10**30, {"x": [float("nan")]}, object()])
def test_values_jcs_cannot_represent_are_refused(value):
    with pytest.raises(DigestError):
        canonical(value)


def test_digest_is_sha256_of_the_canonical_call_and_ignores_key_order():
    args = {"b": [1, 2.50, "é"], "a": None}
    body = b'{"arguments":{"a":null,"b":[1,2.5,"\xc3\xa9"]},"tool_name":"t"}'
    assert digest("t", args) == "sha256:" + hashlib.sha256(body).hexdigest()
    assert digest("t", {"a": None, "b": [1, 2.5, "é"]}) == digest("t", args)
    assert digest("t", {"a": None, "b": [2.5, 1, "é"]}) != digest("t", args)
    assert digest("u", args) != digest("t", args)
    assert short(digest("t", args)) == digest("t", args)[:19]


# ---------------------------------------------------------------- the fast path
_CHARS = st.characters(codec="utf-8") | st.sampled_from(
    ["\x00", "\x1f", "\x7f", "\b", "\f", "\n", "\r", "\t", '"', "\\", "/", "\u2028",
     "\u00e9", "\ue000", "\uffff", "\U0001f600", "\U00010000"])
_TEXT = st.text(_CHARS, max_size=8)
_JSON = st.recursive(
    st.none() | st.booleans() | _TEXT |
    st.integers(min_value=-(2**53) - 2, max_value=2**53 + 2) | st.integers() |
    st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=20)


def _rfc8785(value):
    try:
        return rfc8785.dumps(value)
    except Exception as exc:  # noqa: BLE001 - compared by kind below
        return type(exc)


@settings(max_examples=600, deadline=None)
@given(_JSON)
def test_canonical_is_byte_for_byte_rfc8785_on_any_json(value):
    """The standard-library fast path never changes a digest: on generated JSON (control,
    quote, non-BMP and private-use characters, integers at the 2**53 edge, floats) the bytes
    are rfc8785's, and what rfc8785 refuses is refused."""
    _assert_same_as_rfc8785(value)


@pytest.mark.parametrize("value", [
    {"\U0001f600": 1, "\ue000": 2},  # UTF-16 order differs from code-point order here
    {"a": "\ud800"},  # a lone surrogate
    {"n": 2**53}, {"n": -(2**53)}, {"x": 1.0}, {"x": 1e21}, {"x": -0.0},
    [True, False, None, 0, -1, 9007199254740991], {"": {"": []}},
])
def test_canonical_edge_cases_match_rfc8785(value):
    _assert_same_as_rfc8785(value)


def _assert_same_as_rfc8785(value):
    """canonical(value) is rfc8785's bytes, or refused where rfc8785 refuses."""
    expected = _rfc8785(value)
    if isinstance(expected, bytes):
        assert canonical(value) == expected
    else:
        with pytest.raises(DigestError):
            canonical(value)
