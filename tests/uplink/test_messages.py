"""Message schemas (committed JSON Schema files), builders, canonical encoding, commands."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from edge.common.signing import generate_key, sign_alert
from edge.core import messages as m
from edge.core.errors import MessageError
from edge.core.ports import Detection
from tests.uplink.conftest import fix_dict

SCHEMAS = ["alert.v1", "status.v1", "heartbeat.v1", "command.v1"]


def _jsonschema_ok(doc: Any, name: str) -> bool:
    return not list(jsonschema.Draft202012Validator(m.load_schema(name)).iter_errors(doc))


def _signed_alert(det: Detection, **kw: Any) -> dict[str, Any]:
    det = m.stamp_detection(
        det,
        fix=kw.pop("fix", None),
        gps_state=kw.pop("gps_state", None),
        max_fix_age_s=kw.pop("fix_max_age_s", 2.0),
    )
    alert = m.build_alert(det, unit="unit-a", seq=kw.pop("seq", 7), **kw)
    return sign_alert(alert, generate_key())


@pytest.mark.parametrize("name", SCHEMAS)
def test_committed_schemas_are_valid_json_schema(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(m.load_schema(name))


def test_alert_validates_with_both_validators(make_detection: Callable[..., Detection]) -> None:
    for fix in (None, fix_dict(), fix_dict(mode="none", lat=None, lon=None, age_s=40.0)):
        alert = _signed_alert(make_detection(), fix=fix, gps_state="fix")
        assert m.schema_errors(alert, m.ALERT_SCHEMA) == []
        assert _jsonschema_ok(alert, m.ALERT_SCHEMA)


def test_alert_carries_the_roi_box_when_the_unit_knows_it(
    make_detection: Callable[..., Detection],
) -> None:
    assert "roi_box" not in _signed_alert(make_detection())  # older units: the ROI id only
    alert = _signed_alert(dataclasses.replace(make_detection(), roi_box=(96, 108, 768, 864)))
    assert alert["roi_box"] == [96, 108, 768, 864]
    assert m.schema_errors(alert, m.ALERT_SCHEMA) == []
    assert _jsonschema_ok(alert, m.ALERT_SCHEMA)


def test_alert_carries_the_clip_hash_when_there_is_a_clip(
    make_detection: Callable[..., Detection],
) -> None:
    det = make_detection()
    assert not any(k.startswith("clip") for k in _signed_alert(det)["evidence"])
    ev = dataclasses.replace(
        det.evidence, clip_sha256="cd" * 32, clip_bytes=81234, clip_type="video/webm"
    )
    alert = _signed_alert(dataclasses.replace(det, evidence=ev))
    assert alert["evidence"]["clip_sha256"] == "cd" * 32
    assert alert["evidence"]["clip_bytes"] == 81234
    assert alert["evidence"]["clip_type"] == "video/webm"
    assert m.schema_errors(alert, m.ALERT_SCHEMA) == []
    assert _jsonschema_ok(alert, m.ALERT_SCHEMA)
    alert["evidence"]["clip_type"] = "video/mp5"
    assert m.schema_errors(alert, m.ALERT_SCHEMA)


def test_receipt_lists_clips() -> None:
    topics = m.Topics("phonewatch", "unit-a")
    doc = m.build_receipt("unit-a", alerts=[1], evidence=[1], crops=[1], clips=[1, 2], t_wall_s=0)
    parts = m.parse_receipt(topics.ack, m.encode(doc), topics=topics)
    assert sorted(parts) == [(1, "alert"), (1, "clip"), (1, "crop"), (1, "evidence"), (2, "clip")]
    assert "clips" not in m.build_receipt("unit-a", alerts=[1], evidence=[], t_wall_s=0)


def _mutations(alert: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []

    def mut(label: str, fn: Callable[[dict[str, Any]], None]) -> None:
        a = copy.deepcopy(alert)
        fn(a)
        out.append((label, a))

    mut("missing seq", lambda a: a.pop("seq"))
    mut("seq zero", lambda a: a.__setitem__("seq", 0))
    mut("seq is bool", lambda a: a.__setitem__("seq", True))
    mut("seq is float", lambda a: a.__setitem__("seq", 7.5))
    mut("score > 1", lambda a: a.__setitem__("score", 1.5))
    mut("score string", lambda a: a.__setitem__("score", "0.9"))
    mut("unknown field", lambda a: a.__setitem__("colour", "red"))
    mut("bad unit", lambda a: a.__setitem__("unit", "unit a/b"))
    mut("bad time", lambda a: a.__setitem__("time", "yesterday"))
    mut("bad time source", lambda a: a.__setitem__("time_source", "ntp"))
    mut("version 2", lambda a: a.__setitem__("v", 2))
    mut("bad sha", lambda a: a["evidence"].__setitem__("frame_sha256", "XYZ"))
    mut("extra in model", lambda a: a["model"].__setitem__("extra", 1))
    mut("signature alg", lambda a: a["signature"].__setitem__("alg", "RSA"))
    mut("no signature", lambda a: a.pop("signature"))
    mut("fix lat out of range", lambda a: a.__setitem__("fix", fix_dict(lat=95.0)))
    mut("fix missing key", lambda a: a.__setitem__("fix", {"lat": 1.0}))
    mut("fix wrong mode", lambda a: a.__setitem__("fix", {**fix_dict(), "mode": "4d"}))
    mut("fix is list", lambda a: a.__setitem__("fix", [1, 2]))
    mut("roi_box of three", lambda a: a.__setitem__("roi_box", [1, 2, 3]))
    mut("roi_box negative", lambda a: a.__setitem__("roi_box", [-1, 2, 3, 4]))
    mut("roi_box fractions", lambda a: a.__setitem__("roi_box", [0.1, 0.2, 0.3, 0.4]))
    mut("not an object", lambda a: a.clear())
    return out


def test_malformed_alerts_rejected_by_both_validators(
    make_detection: Callable[..., Detection],
) -> None:
    alert = _signed_alert(make_detection(), fix=fix_dict(), gps_state="fix")
    for label, bad in _mutations(alert):
        assert m.schema_errors(bad, m.ALERT_SCHEMA), label
        assert not _jsonschema_ok(bad, m.ALERT_SCHEMA), label
        with pytest.raises(MessageError):
            m.validate(bad, m.ALERT_SCHEMA)


def test_validation_error_names_the_field(make_detection: Callable[..., Detection]) -> None:
    alert = _signed_alert(make_detection())
    alert["evidence"]["frame_bytes"] = -1
    with pytest.raises(MessageError, match=r"evidence\.frame_bytes"):
        m.validate(alert, m.ALERT_SCHEMA)


def test_alert_content_and_ids(make_detection: Callable[..., Detection]) -> None:
    det = make_detection(roi_id="lane2", score=0.812345678)
    a = m.build_alert(det, unit="unit-a", seq=42)
    assert a["alert_id"] == "unit-a-42"
    assert a["seq"] == 42
    assert a["unit"] == "unit-a"
    assert a["roi"] == "lane2"
    assert a["score"] == pytest.approx(0.812346)
    assert a["frames_over"] == 5
    assert a["window"] == 8
    assert a["threshold"] == 0.7
    assert a["model"] == {"name": "phone-cls", "version": "1.2.0", "sha256": "ab" * 32}
    assert a["evidence"]["frame_sha256"] == det.evidence.frame_sha256
    assert a["evidence"]["frame_bytes"] == det.evidence.frame_bytes
    assert a["fix"] is None
    assert a["time_source"] == "system"
    assert math.isclose(m.parse_utc_iso(a["time"]), det.t_wall_s, abs_tol=1e-5)


def test_time_from_fresh_gps_fix_else_system(make_detection: Callable[..., Detection]) -> None:
    det = make_detection(t_wall_s=1_700_000_000.25)

    def alert(fix: dict[str, Any] | None, gps_state: str) -> dict[str, Any]:
        stamped = m.stamp_detection(det, fix=fix, gps_state=gps_state, max_fix_age_s=2.0)
        return m.build_alert(stamped, unit="u", seq=1)

    fresh = alert(fix_dict(age_s=0.4), "3d")
    # the fix (10:20:30.5) was 0.4 s old when read: the alert time is the fix time + its age
    assert fresh["time_source"] == "gps"
    assert fresh["time"] == "2026-05-01T10:20:30.900000Z"
    stale = alert(fix_dict(age_s=30.0), "stale")
    assert stale["time_source"] == "system"
    assert stale["time"] == "2023-11-14T22:13:20.250000Z"
    # the stale fix is still carried, with its age, never replaced by a made-up position
    assert stale["fix"]["lat"] == 51.5007
    assert stale["fix"]["age_s"] == 30.0
    nofix = alert(fix_dict(mode="none", lat=None, lon=None), "searching")
    assert nofix["time_source"] == "system"
    assert nofix["fix"]["lat"] is None
    # extra keys a GPS source might add are not carried (the schema is closed)
    extra = alert({**fix_dict(), "raw": "$GPGGA"}, "3d")
    assert "raw" not in extra["fix"]


def test_canonical_encoding_is_deterministic_and_excludes_signature() -> None:
    a = {"b": 1, "a": [1.5, "é"], "signature": {"value": "x"}}
    b = {"signature": {"value": "y"}, "a": [1.5, "é"], "b": 1}
    assert m.signing_bytes(a) == m.signing_bytes(b)
    assert m.signing_bytes(a).startswith(m.SIGNING_CONTEXT)
    assert m.canonical_json({"b": 1, "a": 2}) == b'{"a":2,"b":1}'
    with pytest.raises(MessageError):
        m.canonical_json({"x": float("nan")})
    # what a receiver re-encodes after json.loads is byte-identical
    enc = m.encode({"score": 0.1 + 0.2, "n": 3, "t": "é"})
    assert m.encode(json.loads(enc)) == enc


def test_status_and_heartbeat_validate() -> None:
    s = m.build_status("unit-a", "online", t_wall_s=1.7e9, software="0.1.0")
    assert m.schema_errors(s, m.STATUS_SCHEMA) == []
    assert _jsonschema_ok(s, m.STATUS_SCHEMA)
    hb = m.build_heartbeat(
        "unit-a",
        t_wall_s=1.7e9,
        uptime_s=12.0,
        pipeline={
            "fps": 29.7,
            "dropped_frames": 3,
            "invoke_ms_p50": 8.1,
            "invoke_ms_p99": 14.0,
            "frames": 1000,
            "weird": object(),
            "nan": float("nan"),
        },
        outbox_depth=4,
        evidence_pruned=1,
        alerts_pruned=0,
        gps_state="3d",
        cpu_temp_c=51.2,
        fix=fix_dict(),
    )
    assert m.schema_errors(hb, m.HEARTBEAT_SCHEMA) == []
    assert _jsonschema_ok(hb, m.HEARTBEAT_SCHEMA)
    assert hb["fps"] == 29.7
    assert hb["dropped_frames"] == 3
    assert hb["outbox_depth"] == 4
    assert hb["fix"] == fix_dict()
    assert hb["pipeline"] == {"frames": 1000}  # unencodable figures are dropped, not fatal
    bare = m.build_heartbeat(
        "unit-a",
        t_wall_s=1.7e9,
        uptime_s=1.0,
        pipeline={"fps": "fast", "dropped_frames": -1},
        outbox_depth=0,
        evidence_pruned=0,
        alerts_pruned=0,
        gps_state=None,
        cpu_temp_c=None,
    )
    assert bare["fps"] is None
    assert bare["dropped_frames"] is None
    assert bare["fix"] is None
    assert _jsonschema_ok(bare, m.HEARTBEAT_SCHEMA)


TOPICS = m.Topics("phonewatch", "unit-a")


@pytest.mark.parametrize(
    ("name", "payload", "expected"),
    [
        ("snapshot", b"", {}),
        (
            "snapshot",
            b'{"request_id": "r1", "reason": "check lane 2"}',
            {"request_id": "r1", "reason": "check lane 2"},
        ),
        ("mute", b'{"duration_s": 600}', {"duration_s": 600}),
        ("reload", b"{}", {}),
        ("collect", b'{"count": 3}', {"count": 3}),
        (
            "collect",
            b'{"request_id": "c1", "count": 500, "interval_s": 0.2, "rois": ["lane1"]}',
            {"request_id": "c1", "count": 500, "interval_s": 0.2, "rois": ["lane1"]},
        ),
        (
            "collect",
            b'{"count": 1, "interval_s": 3600, "rois": []}',
            {"count": 1, "interval_s": 3600, "rois": []},
        ),
    ],
)
def test_valid_commands(name: str, payload: bytes, expected: dict[str, Any]) -> None:
    assert m.parse_command(TOPICS.cmd(name), payload, topics=TOPICS) == (name, expected)


@pytest.mark.parametrize(
    ("topic", "payload", "why"),
    [
        ("phonewatch/unit-a/cmd/reboot", b"{}", "unknown command"),
        ("phonewatch/unit-b/cmd/mute", b'{"duration_s": 1}', "not a command topic"),
        ("phonewatch/unit-a/cmd/mute", b"{}", "duration_s: required"),
        ("phonewatch/unit-a/cmd/mute", b'{"duration_s": -5}', ">= 0"),
        ("phonewatch/unit-a/cmd/mute", b'{"duration_s": "long"}', "must be number"),
        ("phonewatch/unit-a/cmd/mute", b'{"duration_s": NaN}', "NaN is not allowed"),
        ("phonewatch/unit-a/cmd/mute", b'{"duration_s": 5, "rm": "-rf"}', "unknown field"),
        ("phonewatch/unit-a/cmd/snapshot", b"[1, 2]", "JSON object"),
        ("phonewatch/unit-a/cmd/snapshot", b"\xff\xfe", "not JSON"),
        ("phonewatch/unit-a/cmd/snapshot", b"{" * 5000, "exceeds"),
        ("phonewatch/unit-a/cmd/snapshot", b'{"reason": "' + b"x" * 5000 + b'"}', "exceeds"),
        ("phonewatch/unit-a/cmd/collect", b"{}", "count: required"),
        ("phonewatch/unit-a/cmd/collect", b'{"count": 0}', ">= 1"),
        ("phonewatch/unit-a/cmd/collect", b'{"count": 501}', "<= 500"),
        ("phonewatch/unit-a/cmd/collect", b'{"count": 2.5}', "must be integer"),
        ("phonewatch/unit-a/cmd/collect", b'{"count": true}', "must be integer"),
        ("phonewatch/unit-a/cmd/collect", b'{"count": 3, "interval_s": 0.1}', ">= 0.2"),
        ("phonewatch/unit-a/cmd/collect", b'{"count": 3, "interval_s": 3600.5}', "<= 3600"),
        ("phonewatch/unit-a/cmd/collect", b'{"count": 3, "every": 2}', "unknown field"),
        ("phonewatch/unit-a/cmd/collect", b'{"count": 3, "rois": "lane1"}', "must be array"),
        ("phonewatch/unit-a/cmd/collect", b'{"count": 3, "rois": [1]}', "must be string"),
        (
            "phonewatch/unit-a/cmd/collect",
            b'{"count": 3, "rois": ["' + b'", "'.join(b"r%d" % i for i in range(17)) + b'"]}',
            "more than 16 items",
        ),
        (
            "phonewatch/unit-a/cmd/collect",
            b'{"count": 3, "request_id": "' + b"r" * 65 + b'"}',
            "longer than 64",
        ),
        (
            "phonewatch/unit-a/cmd/collect",
            b'{"count": 3, "rois": ["' + b"A" * 5000 + b'"]}',
            "exceeds",
        ),
    ],
)
def test_bad_commands_rejected(topic: str, payload: bytes, why: str) -> None:
    with pytest.raises(MessageError, match=why):
        m.parse_command(topic, payload, topics=TOPICS, max_bytes=4096)


def test_collect_schema_agrees_with_jsonschema() -> None:
    schema = m.load_schema(m.COMMAND_SCHEMA)
    sub = {**schema["$defs"]["collect"], "$defs": schema["$defs"]}
    for doc, ok in [
        ({"count": 1}, True),
        ({"count": 3, "rois": ["a"] * 16}, True),
        ({"count": 3, "rois": ["a"] * 17}, False),
        ({"count": 0}, False),
        ({"count": 3, "interval_s": 0.19}, False),
        ({"count": 3, "x": 1}, False),
    ]:
        ours = not m._check(doc, schema["$defs"]["collect"], schema, "")
        theirs = not list(jsonschema.Draft202012Validator(sub).iter_errors(doc))
        assert ours == theirs == ok, doc


def test_collect_names_and_topics() -> None:
    assert m.collect_name("lane1", 1_700_000_000.1239) == "lane1-1700000000123"
    assert TOPICS.collect("lane1-1700000000123") == "phonewatch/unit-a/collect/lane1-1700000000123"
    assert TOPICS.snapshot == "phonewatch/unit-a/snapshot"
    for bad in ("a/b", "+", "#", "", "x" * 129, "lane 1"):
        with pytest.raises(MessageError):
            TOPICS.collect(bad)
    with pytest.raises(MessageError):
        m.collect_name("x" * 120, 1_700_000_000.0)


def test_deeply_nested_command_is_rejected_not_crashing() -> None:
    payload = b'{"reason":' + b"[" * 3000 + b"]" * 3000 + b"}"
    with pytest.raises(MessageError):
        m.parse_command(TOPICS.cmd("snapshot"), payload, topics=TOPICS, max_bytes=1 << 20)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"a":1}', {"a": 1}),
        (b'{"a":"\\ud800"}', {"a": "\ud800"}),
        (b'{"a":1,"a":2}', {"a": 2}),
        (b'{"a":NaN}', "NaN is not allowed"),
        (b'{"a":-Infinity}', "-Infinity is not allowed"),
        (b"[1]", "must be a JSON object, not list"),
        (b"1" * 100, "must be a JSON object, not int"),
        (b"\xff\xfe", "is not JSON"),
        (b'{"a":', "is not JSON"),
        (b"", "is not JSON"),
        (b"[" * 100000, "is not JSON"),
        (b'{"a":1' + b"0" * 5000 + b"}", "not acceptable JSON"),
    ],
)
def test_decode_returns_an_object_or_raises_a_message_error(
    payload: bytes, expected: dict[str, Any] | str
) -> None:
    # one decoder serves the unit and the control room's receiver
    if isinstance(expected, dict):
        assert m.decode(payload, max_bytes=1 << 20) == expected
    else:
        with pytest.raises(MessageError, match=re.escape(expected)):
            m.decode(payload, max_bytes=1 << 20)
    with pytest.raises(MessageError, match="exceeds"):
        m.decode(b'{"a":1}', max_bytes=3)


def test_huge_integers_are_rejected_with_a_message_error() -> None:
    # 400 digits: too big for a float (math.isfinite would raise OverflowError);
    # 5,000 digits: beyond Python's int-parsing limit (json.loads raises a plain ValueError).
    for digits in (400, 5000):
        big = b"1" + b"0" * digits
        with pytest.raises(MessageError):
            m.parse_command(
                TOPICS.cmd("mute"),
                b'{"duration_s": ' + big + b"}",
                topics=TOPICS,
                max_bytes=1 << 20,
            )
    with pytest.raises(MessageError, match="duration_s: number too large"):
        m.parse_command(
            TOPICS.cmd("mute"),
            b'{"duration_s": 1' + b"0" * 400 + b"}",
            topics=TOPICS,
            max_bytes=1 << 20,
        )


def test_topics_reject_wildcards_and_bad_ids() -> None:
    for root, unit in (("phone#watch", "u"), ("phonewatch", "u/+"), ("phonewatch", "")):
        with pytest.raises(MessageError):
            m.Topics(root, unit)
    t = m.Topics("fleet/phonewatch", "unit-a")
    assert t.alert == "fleet/phonewatch/unit-a/alert"
    assert t.evidence("unit-a-3") == "fleet/phonewatch/unit-a/evidence/unit-a-3"
    assert t.cmd_filter == "fleet/phonewatch/unit-a/cmd/+"


KEYWORD_SCHEMA: dict[str, Any] = {
    "$defs": {"small": {"type": "number", "minimum": -5, "maximum": 5}},
    "type": "object",
    "additionalProperties": False,
    "required": ["a", "b"],
    "properties": {
        "a": {"$ref": "#/$defs/small"},
        "b": {"type": ["string", "null"], "minLength": 2, "maxLength": 4, "pattern": "^[a-z]+$"},
        "c": {"type": "array", "minItems": 1, "maxItems": 3, "items": {"$ref": "#/$defs/small"}},
        "d": {"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 0}]},
        "e": {"const": 1},
        "f": {"enum": ["x", 1, None]},
        "g": {"const": "k"},
        "h": {"type": "boolean"},
        "j": {"type": "object", "properties": {"k": {"type": "string"}}, "required": ["k"]},
        "l": {"minimum": 1, "maxLength": 1, "maxItems": 0},
        "n": {
            "type": "object",
            "maxProperties": 2,
            "propertyNames": {"pattern": "^[a-z]{1,3}$"},
            "additionalProperties": {"type": "integer", "minimum": 0},
        },
    },
}
"""Every keyword of the validator's subset, for pinning its messages (and, in
``tests/controlroom/test_fastcheck.py``, the compiled check's agreement)."""

KEYWORD_CASES: list[tuple[Any, list[str]]] = [
    ({"a": 1, "b": "ab"}, []),
    (
        {
            "a": 1,
            "b": None,
            "c": [0],
            "d": 2.5,
            "e": 1,
            "f": None,
            "g": "k",
            "h": False,
            "j": {"k": "v"},
            "l": True,
        },
        [],
    ),
    ({}, ["a: required", "b: required"]),
    ({"a": 1, "b": "ab", "z": 0, "y": 1}, ["z: unknown field", "y: unknown field"]),
    ("text", ["(message): must be object, not string"]),
    ([], ["(message): must be object, not array"]),
    ({"a": 9, "b": "ab"}, ["a: must be <= 5"]),
    ({"a": -9.5, "b": "ab"}, ["a: must be >= -5"]),
    ({"a": True, "b": "ab"}, ["a: must be number, not boolean"]),
    ({"a": float("nan"), "b": "ab"}, ["a: must be finite"]),
    ({"a": float("inf"), "b": "ab"}, ["a: must be finite", "a: must be <= 5"]),
    ({"a": 10**400, "b": "ab"}, ["a: number too large"]),
    ({"a": 1, "b": 3}, ["b: must be string or null, not integer"]),
    ({"a": 1, "b": "a"}, ["b: shorter than 2"]),
    ({"a": 1, "b": "ABCDE"}, ["b: longer than 4", "b: does not match ^[a-z]+$"]),
    ({"a": 1, "b": "ab", "c": []}, ["c: fewer than 1 items"]),
    (
        {"a": 1, "b": "ab", "c": [0, 9, "x", -9]},
        [
            "c: more than 3 items",
            "c[1]: must be <= 5",
            "c[2]: must be number, not string",
            "c[3]: must be >= -5",
        ],
    ),
    ({"a": 1, "b": "ab", "d": -1.5}, ["d: matches 0 of the allowed forms, not exactly one"]),
    ({"a": 1, "b": "ab", "d": 3}, ["d: matches 2 of the allowed forms, not exactly one"]),
    ({"a": 1, "b": "ab", "e": True}, ["e: must be 1"]),
    ({"a": 1, "b": "ab", "e": 1.0}, ["e: must be 1"]),
    ({"a": 1, "b": "ab", "f": "y"}, ["f: must be one of ['x', 1, None]"]),
    ({"a": 1, "b": "ab", "g": "kk"}, ["g: must be 'k'"]),
    ({"a": 1, "b": "ab", "h": 0}, ["h: must be boolean, not integer"]),
    ({"a": 1, "b": "ab", "h": 0.5}, ["h: must be boolean, not number"]),
    ({"a": 1, "b": "ab", "h": {}}, ["h: must be boolean, not object"]),
    ({"a": 1, "b": "ab", "j": {"k": 1, "m": 2}}, ["j.k: must be string, not integer"]),
    ({"a": 1, "b": "ab", "j": {}}, ["j.k: required"]),
    ({"a": 1, "b": "ab", "l": 0}, ["l: must be >= 1"]),
    ({"a": 1, "b": "ab", "l": "xy"}, ["l: longer than 1"]),
    ({"a": 1, "b": "ab", "l": [1]}, ["l: more than 0 items"]),
    ({"a": 1, "b": "ab", "l": None}, []),
    ({"a": 1, "b": "ab", "n": {"x": 1, "yy": 2}}, []),
    ({"a": 1, "b": "ab", "n": {"x": -1}}, ["n.x: must be >= 0"]),
    ({"a": 1, "b": "ab", "n": {"X": 1}}, ["n.X (name): does not match ^[a-z]{1,3}$"]),
    ({"a": 1, "b": "ab", "n": {"x": 1, "y": 2, "z": 3}}, ["n: more than 2 fields"]),
    (
        {"c": "x", "z": 1},
        ["a: required", "b: required", "c: must be array, not string", "z: unknown field"],
    ),
]


@pytest.mark.parametrize(("doc", "errors"), KEYWORD_CASES)
def test_validator_messages_for_every_keyword(doc: Any, errors: list[str]) -> None:
    assert m._check(doc, KEYWORD_SCHEMA, KEYWORD_SCHEMA, "") == errors
    if isinstance(doc, dict):  # below the top, every location is under the parent's
        assert m._check(doc, KEYWORD_SCHEMA, KEYWORD_SCHEMA, "top") == [f"top.{e}" for e in errors]
