"""JSON request bodies: the shape scan that refuses bombs before they are parsed (json_body.py)."""

from __future__ import annotations

import io
import json

import falcon
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskservice.http_errors import InvalidRequest
from taskservice.json_body import (
    CHUNK_BYTES,
    LEAN_PARSE_BYTES,
    MAX_DEPTH,
    MAX_TOKENS,
    CheckedJSONHandler,
    ShapeScanner,
    read_checked,
)
from tests.test_api import assert_error, token_for

SIX_MIB = 6 * 2**20


def bombs(size: int = SIX_MIB) -> dict[str, bytes]:
    """Bodies of at most ``size`` bytes whose parse would build millions of objects."""

    def array(item: bytes) -> bytes:
        return b"[" + b",".join([item] * ((size - 2) // (len(item) + 1))) + b"]"

    keys, length, i = [], 1, 0
    while length + len(b'"k%d":0,' % i) <= size:
        keys.append(b'"k%d":0' % i)
        length, i = length + len(keys[-1]) + 1, i + 1
    return {
        "empty arrays": array(b"[]"),
        "deep objects": b'{"a":' * (size // 5),
        "zeros": array(b"0"),
        "many keys": b"{" + b",".join(keys) + b"}",
        "empty strings": array(b'""'),
        "deep arrays": b"[" * size,
    }


def scanned(body: bytes, cuts: list[int]) -> ShapeScanner:
    scanner = ShapeScanner(max_tokens=10**9, max_depth=10**9)
    start = 0
    for cut in [*sorted(cuts), len(body)]:
        scanner.feed(body[start:cut])
        start = cut
    return scanner


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='"\\\\/[]{},:ab\n\x00é'),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values, data=st.data())
def test_chunk_boundaries_change_nothing(value, data):
    """Split anywhere (inside an escape, between a backslash and a quote), a body scans the same
    as whole, and its count bounds the values and keys the parser builds from it."""
    body = json.dumps(value).encode()
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=4))
    whole, split = scanned(body, []), scanned(body, cuts)
    assert (split.tokens, split.depth) == (whole.tokens, whole.depth) == (whole.tokens, 0)

    def count(item) -> int:
        if isinstance(item, list):
            return 1 + sum(count(x) for x in item)
        if isinstance(item, dict):
            return 1 + sum(1 + count(x) for x in item.values())
        return 1

    assert count(value) <= whole.tokens + 1


def test_a_valid_task_body_is_few_tokens_and_flat():
    body = {"code": "print('[{,:\\\"')", "language": "python", "stdin": "", "timeout": 5}
    scanner = ShapeScanner()
    scanner.feed(json.dumps({**body, "memory_mb": 128}).encode())
    assert scanner.tokens <= 25 and scanner.depth == 0


@pytest.mark.parametrize("name", bombs(1024).keys())
def test_bombs_are_refused_within_the_first_chunk(name):
    body = bombs()[name]
    stream = io.BytesIO(body)
    with pytest.raises(InvalidRequest) as refused:
        read_checked(stream, len(body))
    assert stream.tell() == CHUNK_BYTES
    assert (
        str(MAX_TOKENS) in refused.value.description or str(MAX_DEPTH) in refused.value.description
    )


def test_large_valid_bodies_pass_whole():
    # Every byte of code and stdin escaped, the largest a valid task body gets.
    body = json.dumps({"code": '"\\\x00' * 20_000, "stdin": "\x00\\" * 500_000}).encode()
    assert len(body) > 4 * 2**20
    assert read_checked(io.BytesIO(body), len(body)) == body


@pytest.mark.parametrize("path", ["/register", "/login", "/task"])
@pytest.mark.parametrize("name", bombs(1024).keys())
def test_bombs_get_the_json_400(client, path, name):
    headers = {"Content-Type": "application/json"}
    if path == "/task":
        headers["Authorization"] = f"Bearer {token_for(client)}"
    body = bombs(60 * 1024)[name]  # under the 64 KiB limit of /register and /login
    response = client.simulate_post(path, body=body, headers=headers)
    assert assert_error(response, 400)["title"] == "Invalid request"


def test_a_body_just_inside_the_limits_reaches_validation(client):
    """Unknown fields in a body the scan lets through are named by validation, as before."""
    body = {"username": "ada", "password": "correct horse", **{f"f{i}": [0] for i in range(40)}}
    response = client.simulate_post(
        "/register", body=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert "Unknown field(s): f0, f1" in assert_error(response, 400)["description"]


@pytest.mark.parametrize(
    "value",
    [
        {"code": "x" * 100_000, "n": 2**70, "f": float("nan"), "s": "\ud800"},
        {"code": "é" * 100_000, "files": [{"name": "a", "content": "\x01" * 50_000}]},
    ],
)
def test_a_large_body_means_what_a_small_one_means(value):
    # Past LEAN_PARSE_BYTES the standard library parses: the same values, what orjson refuses
    # (big integers, NaN, lone surrogates) included, as json_codec's fallback reads them.
    handler = CheckedJSONHandler()
    text = json.dumps(value).encode()
    assert len(text) > LEAN_PARSE_BYTES
    parsed = handler.deserialize(io.BytesIO(text), "application/json", len(text))
    assert json.dumps(parsed) == json.dumps(value)


def test_a_large_body_must_be_utf8():
    handler = CheckedJSONHandler()
    text = json.dumps({"code": "x" * 100_000}).encode("utf-16")
    with pytest.raises(falcon.MediaMalformedError):
        handler.deserialize(io.BytesIO(text), "application/json", len(text))
