"""The receiver's fast checks accept exactly what the reference checks accept: the compiled
schema validator against ``edge.core.messages.schema_errors``, the reusable decoder against
``messages.decode``, the payload-cut signature check against the full re-encoding, over
thousands of randomly mutated messages."""

from __future__ import annotations

import copy
import json
import random
import time
from typing import Any

import pytest

from controlroom import crypto, fastcheck
from edge.common.signing import generate_key, sign_alert
from edge.core import messages as m
from edge.core.errors import MessageError
from edge.core.ports import VehicleInfo
from tests.controlroom.conftest import Unit, status_and_heartbeat
from tests.uplink.test_messages import KEYWORD_CASES, KEYWORD_SCHEMA

ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2,
    1.5,
    -0.0,
    0.999,
    1.0,
    1.0001,
    90.5,
    360,
    361,
    255,
    256,
    10**19,
    10**30,
    10**400,
    float("nan"),
    float("inf"),
    "",
    "x",
    "x" * 65,
    "x" * 300,
    "3d",
    "gps",
    "system",
    "phonewatch.alert",
    "Ed25519",
    "0123456789abcdef",
    "ab" * 32,
    "AB" * 32,
    "2026-05-01T10:20:30.5Z",
    "2026-05-01 10:20:30Z",
    "unit-a",
    "unit a",
    "unit-a-7",
    [],
    [1],
    {},
    {"a": 1},
    {"time": None},
]


def _paths(doc: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*at, k))
    return out


def _mutate(doc: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = rng.choice(paths)
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if not isinstance(parent, dict):
            continue
        op = rng.random()
        if op < 0.15:
            parent.pop(path[-1], None)
        elif op < 0.25:
            parent[rng.choice(("extra", "signature", "unit", "mode"))] = rng.choice(ODD_VALUES)
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(ODD_VALUES))
    return doc


def _reference_ok(doc: Any, name: str) -> bool:
    try:
        return not m.schema_errors(doc, name)
    except (OverflowError, RecursionError, ValueError):
        return False  # the reference cannot check it: a hostile document, refused


def _samples() -> dict[str, dict[str, Any]]:
    unit = Unit("unit-a", generate_key())
    alert = json.loads(unit.alert(seq=7)[0])
    no_fix = json.loads(unit.alert(seq=8, fix=None)[0])
    vehicle = json.loads(
        unit.alert(
            seq=9,
            camera="north",
            vehicle=VehicleInfo(track_id=4, box=(10, 20, 30, 40), label="car", frames=9),
            frame_size=(64, 48),
        )[0]
    )
    st, hb = status_and_heartbeat("unit-a", time.time())
    cams = dict(hb)
    cams["cameras"] = m.heartbeat_cameras(
        {
            "north": {"status": "running", "fps": 30.0, "dropped": 1, "last_error": None},
            "side": {"status": "degraded", "fps": None, "dropped": 9, "last_error": "lost"},
        }
    )
    cams["vehicles"] = {"tracks_per_min": 4.0, "active": 2}
    return {
        "alert": alert,
        "alert_no_fix": no_fix,
        "alert_vehicle": vehicle,
        "heartbeat": hb,
        "heartbeat_cameras": cams,
        "status": st,
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "sample"),
    [
        (m.ALERT_SCHEMA, "alert"),
        (m.ALERT_SCHEMA, "alert_no_fix"),
        (m.ALERT_SCHEMA, "alert_vehicle"),
        (m.HEARTBEAT_SCHEMA, "heartbeat"),
        (m.HEARTBEAT_SCHEMA, "heartbeat_cameras"),
        (m.STATUS_SCHEMA, "status"),
    ],
)
def test_compiled_schema_agrees_with_the_reference(name: str, sample: str) -> None:
    doc = _samples()[sample]
    check = fastcheck.validator(name)
    assert check(doc)
    assert _reference_ok(doc, name)
    rng = random.Random(f"{name}-{sample}")
    agree = accepted = 0
    for _ in range(4000):
        bad = _mutate(doc, rng)
        ref = _reference_ok(bad, name)
        assert check(bad) == ref, (bad, m.schema_errors(bad, name) if ref is False else [])
        assert (fastcheck.schema_errors(bad, name) == []) == ref
        agree += 1
        accepted += ref
    assert agree == 4000
    assert 0 < accepted < 4000  # both outcomes were exercised
    for odd in ODD_VALUES:  # not even an object
        assert check(odd) == _reference_ok(odd, name)


def test_schema_errors_explain_a_rejection_and_never_raise() -> None:
    doc = _samples()["alert"]
    doc["frame_index"] = 10**400  # too large for a float: refused with a reason, never a crash
    errors = fastcheck.schema_errors(doc, m.ALERT_SCHEMA)
    assert errors == ["frame_index: number too large"]
    doc["frame_index"] = -1
    assert fastcheck.schema_errors(doc, m.ALERT_SCHEMA) == ["frame_index: must be >= 0"]


def test_compiled_list_bounds_agree_with_the_reference() -> None:
    schema = m.load_schema(m.COMMAND_SCHEMA)
    collect = schema["$defs"]["collect"]  # rois: at most 16 items
    check = fastcheck.compile_schema(collect, schema)
    for n in (0, 1, 16, 17, 40):
        doc = {"count": 3, "rois": [f"r{i}" for i in range(n)]}
        ref = not m._check(doc, collect, schema, "")
        assert check(doc) == ref
        assert ref == (n <= 16)


def test_payload_signature_check_agrees_with_the_full_check() -> None:
    key = generate_key()
    pub = key.public_key()
    unit = Unit("unit-a", key)
    payload, _ = unit.alert(seq=3)
    alert = json.loads(payload)
    assert crypto.signature_problem(alert, pub, payload=payload) is None
    spaced = json.dumps(alert, indent=1).encode()  # validly signed, not canonical on the wire
    assert crypto.signature_problem(json.loads(spaced), pub, payload=spaced) is None

    other = generate_key()
    forged = m.encode(sign_alert({k: v for k, v in alert.items() if k != "signature"}, other))
    variants = [
        forged,
        payload.replace(b'"score":0.93', b'"score":0.94'),
        payload.replace(b'"roi":"lane1"', b'"roi":"lane2"'),
        payload[:-1] + b',"score":0.5}',  # a duplicate key after the signed content
        payload.replace(b',"signature":', b',"signature":{"alg":"x"},"signature":'),
        payload.replace(b'"alert_id"', b'"signature":{},"alert_id"'),
    ]
    rng = random.Random(5)
    for _ in range(300):  # flip one byte of the signed content
        i = rng.randrange(1, len(payload) - 1)
        variants.append(
            payload[:i] + bytes([payload[i] ^ rng.choice((1, 2, 4, 32))]) + payload[i + 1 :]
        )
    checked = 0
    for raw in variants:
        try:
            doc = m.decode(raw)
        except MessageError:
            continue
        if m.schema_errors(doc, m.ALERT_SCHEMA):
            continue
        full = crypto.signature_problem(doc, pub)
        fast = crypto.signature_problem(doc, pub, payload=raw, expected_key_id=crypto.key_id(pub))
        assert (fast is None) == (full is None), raw
        checked += 1
    assert checked >= 50


def test_compiled_check_agrees_on_every_keyword() -> None:
    """The schema with every keyword of the subset: its pinned cases and mutations of them."""
    check = fastcheck.compile_schema(KEYWORD_SCHEMA)
    docs: list[Any] = [doc for doc, _ in KEYWORD_CASES]
    rng = random.Random("keywords")
    docs += [_mutate(doc, rng) for doc in docs if isinstance(doc, dict) for _ in range(60)]
    verdicts = set()
    for doc in docs:
        ref = not m._check(doc, KEYWORD_SCHEMA, KEYWORD_SCHEMA, "")
        assert check(doc) == ref, (doc, m._check(doc, KEYWORD_SCHEMA, KEYWORD_SCHEMA, ""))
        verdicts.add(ref)
    assert verdicts == {True, False}
