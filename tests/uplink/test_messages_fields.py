"""Camera id, vehicle track and frame size on the alert; per-camera and vehicle figures on the
heartbeat (issues 21 and 22). All optional: an alert or heartbeat without them is unchanged."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any, cast

import jsonschema
import pytest

from edge.app.heartbeat import StatsEmitter
from edge.common.signing import generate_key, sign_alert, verify_alert
from edge.core import messages as m
from edge.core.errors import MessageError
from edge.core.ports import Detection, Uplink, VehicleInfo

CAR = VehicleInfo(track_id=42, box=(100, 200, 640, 360), label="car", frames=17)


def _jsonschema_ok(doc: Any, name: str) -> bool:
    return not list(jsonschema.Draft202012Validator(m.load_schema(name)).iter_errors(doc))


def _both_ok(doc: Any, name: str) -> bool:
    ours = not m.schema_errors(doc, name)
    assert ours == _jsonschema_ok(doc, name), m.schema_errors(doc, name)
    return ours


def _with_fields(det: Detection, **kw: Any) -> Detection:
    fields: dict[str, Any] = {"camera_id": "north", "vehicle": CAR, "frame_size": (1920, 1080)}
    fields.update(kw)
    return dataclasses.replace(det, **fields)


def test_camera_and_vehicle_are_signed_and_round_trip(
    make_detection: Callable[..., Detection],
) -> None:
    key = generate_key()
    alert = sign_alert(m.build_alert(_with_fields(make_detection()), unit="unit-a", seq=3), key)
    assert alert["camera"] == "north"
    assert alert["frame_size"] == [1920, 1080]
    assert alert["vehicle"] == {"track_id": 42, "box": [100, 200, 640, 360], "label": "car",
                                "frames": 17}  # fmt: skip
    assert _both_ok(alert, m.ALERT_SCHEMA)
    wire = m.decode(m.encode(alert))
    assert wire == alert
    assert verify_alert(wire, key.public_key())
    assert m.alert_problems(wire) == []
    for field, value in (
        ("camera", "south"),
        ("vehicle", {**alert["vehicle"], "track_id": 43}),
        ("frame_size", [1280, 720]),
    ):  # every new field is inside the signed document
        forged = copy.deepcopy(wire)
        forged[field] = value
        assert not verify_alert(forged, key.public_key()), field


def test_an_alert_without_them_is_as_before_and_still_verifies(
    make_detection: Callable[..., Detection],
) -> None:
    key = generate_key()
    alert = sign_alert(m.build_alert(make_detection(), unit="unit-a", seq=4), key)
    assert not {"camera", "vehicle", "frame_size"} & set(alert)
    assert _both_ok(alert, m.ALERT_SCHEMA)
    assert verify_alert(m.decode(m.encode(alert)), key.public_key())
    assert m.alert_problems(alert) == []


def test_the_vehicle_box_is_clipped_to_the_frame(
    make_detection: Callable[..., Detection],
) -> None:
    half_out = VehicleInfo(track_id=0, box=(-50, 1000, 400, 200), label="pickup truck", frames=1)
    det = _with_fields(make_detection(), vehicle=half_out)
    alert = m.build_alert(det, unit="unit-a", seq=5)
    assert alert["vehicle"]["box"] == [0, 1000, 350, 80]
    gone = VehicleInfo(track_id=1, box=(1920, 0, 100, 100), label="car", frames=3)
    with pytest.raises(MessageError, match=r"vehicle\.box .* no area inside the 1920x1080"):
        m.vehicle_doc(gone, frame_size=(1920, 1080))


def test_a_bad_vehicle_costs_the_vehicle_never_the_alert(
    make_detection: Callable[..., Detection], caplog: pytest.LogCaptureFixture
) -> None:
    gone = VehicleInfo(track_id=1, box=(1920, 0, 100, 100), label="car", frames=3)
    for bad in (gone, dataclasses.replace(CAR, track_id=-1), dataclasses.replace(CAR, frames=0)):
        alert = m.build_alert(_with_fields(make_detection(), vehicle=bad), unit="unit-a", seq=6)
        assert "vehicle" not in alert
        assert alert["camera"] == "north"
        assert _both_ok(sign_alert(alert, generate_key()), m.ALERT_SCHEMA)
    assert caplog.text.count("alert unit-a-6 goes without its vehicle") == 3


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"camera_id": "c" * 33}, "bad camera id"),
        ({"camera_id": "north/1"}, "bad camera id"),
        ({"vehicle": dataclasses.replace(CAR, track_id=-1)}, r"vehicle\.track_id -1"),
        ({"vehicle": dataclasses.replace(CAR, label="<script>")}, r"vehicle\.label"),
        ({"vehicle": dataclasses.replace(CAR, frames=0)}, r"vehicle\.frames"),
        ({"frame_size": (0, 1080)}, "bad frame size"),
    ],
)
def test_the_unit_refuses_to_build_bad_fields(
    make_detection: Callable[..., Detection], fields: dict[str, Any], match: str
) -> None:
    det = _with_fields(make_detection(), **fields)
    build: Callable[[], Any] = (
        (lambda: m.vehicle_doc(fields["vehicle"], frame_size=det.frame_size))
        if "vehicle" in fields
        else (lambda: m.build_alert(det, unit="unit-a", seq=7))
    )
    with pytest.raises(MessageError, match=match):
        build()


def _hostile(alert: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []

    def mut(label: str, fn: Callable[[dict[str, Any]], None]) -> None:
        a = copy.deepcopy(alert)
        fn(a)
        out.append((label, a))

    mut("camera overlong", lambda a: a.__setitem__("camera", "c" * 33))
    mut("camera empty", lambda a: a.__setitem__("camera", ""))
    mut("camera with a slash", lambda a: a.__setitem__("camera", "a/b"))
    mut("camera number", lambda a: a.__setitem__("camera", 3))
    mut("track id negative", lambda a: a["vehicle"].__setitem__("track_id", -1))
    mut("track id float", lambda a: a["vehicle"].__setitem__("track_id", 1.5))
    mut("track id huge", lambda a: a["vehicle"].__setitem__("track_id", 2**60))
    mut("box negative", lambda a: a["vehicle"].__setitem__("box", [-1, 0, 10, 10]))
    mut("box of three", lambda a: a["vehicle"].__setitem__("box", [1, 2, 3]))
    mut("box far out", lambda a: a["vehicle"].__setitem__("box", [0, 0, 100001, 10]))
    mut("label html", lambda a: a["vehicle"].__setitem__("label", "<b>car</b>"))
    mut("label overlong", lambda a: a["vehicle"].__setitem__("label", "c" * 33))
    mut("frames zero", lambda a: a["vehicle"].__setitem__("frames", 0))
    mut("vehicle extra field", lambda a: a["vehicle"].__setitem__("colour", "red"))
    mut("vehicle missing box", lambda a: a["vehicle"].pop("box"))
    mut("vehicle is a list", lambda a: a.__setitem__("vehicle", [1, 2]))
    mut("frame_size zero", lambda a: a.__setitem__("frame_size", [0, 1080]))
    return out


def test_hostile_fields_fail_the_schema(make_detection: Callable[..., Detection]) -> None:
    alert = sign_alert(
        m.build_alert(_with_fields(make_detection()), unit="unit-a", seq=8), generate_key()
    )
    for label, bad in _hostile(alert):
        assert m.schema_errors(bad, m.ALERT_SCHEMA), label
        assert not _jsonschema_ok(bad, m.ALERT_SCHEMA), label


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"vehicle_box": [1800, 100, 200, 100]}, r"vehicle\.box: .* outside the 1920x1080"),
        ({"vehicle_box": [10, 1000, 20, 81]}, r"vehicle\.box: .* outside the 1920x1080"),
        ({"vehicle_box": [10, 10, 0, 50]}, r"vehicle\.box: .* has no area"),
        ({"roi_box": [1000, 500, 1000, 100]}, r"roi_box: .* outside the 1920x1080"),
        (
            {"vehicle_box": [99999, 0, 10, 10], "frame_size": None},
            r"vehicle\.box: .* past 100000 pixels",
        ),
    ],
)
def test_a_box_outside_the_frame_is_a_problem_the_schema_cannot_see(
    make_detection: Callable[..., Detection], change: dict[str, Any], problem: str
) -> None:
    alert = m.build_alert(_with_fields(make_detection()), unit="unit-a", seq=9)
    if "vehicle_box" in change:
        alert["vehicle"]["box"] = change["vehicle_box"]
    if "roi_box" in change:
        alert["roi_box"] = change["roi_box"]
    if "frame_size" in change:
        alert.pop("frame_size")
    signed = sign_alert(alert, generate_key())
    assert _both_ok(signed, m.ALERT_SCHEMA)  # passes the schema ...
    (found,) = m.alert_problems(signed)  # ... but not the frame
    assert re.search(problem, found), found


def _heartbeat(**kw: Any) -> dict[str, Any]:
    return m.build_heartbeat(
        "unit-a",
        t_wall_s=1.0e9,
        uptime_s=5.0,
        pipeline={"fps": 30.0},
        outbox_depth=0,
        evidence_pruned=0,
        alerts_pruned=0,
        gps_state=None,
        cpu_temp_c=None,
        **kw,
    )


CAMERAS: dict[str, dict[str, Any]] = {
    "north": {"status": "running", "fps": 29.97, "dropped": 3, "last_error": None},
    "side-2": {"status": "degraded", "fps": None, "dropped": 120, "last_error": "x" * 400},
}


def test_heartbeat_carries_cameras_and_vehicles_when_given() -> None:
    bare = _heartbeat()
    assert "cameras" not in bare
    assert "vehicles" not in bare
    assert _both_ok(bare, m.HEARTBEAT_SCHEMA)
    hb = _heartbeat(cameras=CAMERAS, vehicles={"tracks_per_min": 12.5, "active": 3})
    assert _both_ok(hb, m.HEARTBEAT_SCHEMA)
    assert hb["cameras"]["north"] == CAMERAS["north"]
    assert hb["cameras"]["side-2"]["last_error"] == "x" * 256  # cut, not refused
    assert hb["vehicles"] == {"tracks_per_min": 12.5, "active": 3}
    assert json.loads(m.encode(hb)) == hb


@pytest.mark.parametrize(
    ("cameras", "match"),
    [
        ({"c" * 33: CAMERAS["north"]}, "bad camera id"),
        ({"north": {**CAMERAS["north"], "status": "on fire"}}, r"cameras\.north\.status"),
        ({"north": {**CAMERAS["north"], "dropped": -1}}, r"cameras\.north\.dropped"),
        ({f"c{i}": CAMERAS["north"] for i in range(33)}, "at most 32"),
    ],
)
def test_bad_camera_figures_are_refused_naming_the_camera(
    cameras: dict[str, Any], match: str
) -> None:
    with pytest.raises(MessageError, match=match):
        m.heartbeat_cameras(cameras)


def test_hostile_heartbeat_parts_fail_the_schema() -> None:
    hb = _heartbeat(cameras=CAMERAS, vehicles={"tracks_per_min": None, "active": 0})
    assert _both_ok(hb, m.HEARTBEAT_SCHEMA)
    bad_parts: list[tuple[str, Any]] = [
        ("cameras", {"a/b": CAMERAS["north"]}),
        ("cameras", {"north": {**CAMERAS["north"], "extra": 1}}),
        ("cameras", {"north": {**CAMERAS["north"], "fps": -1}}),
        ("cameras", {f"c{i}": CAMERAS["north"] for i in range(33)}),
        ("cameras", []),
        ("vehicles", {"tracks_per_min": 1.0, "active": -1}),
        ("vehicles", {"tracks_per_min": 1.0}),
    ]
    for field, value in bad_parts:
        bad = {**hb, field: value}
        assert not _both_ok(bad, m.HEARTBEAT_SCHEMA), (field, value)


class _Uplink:
    """Just what :meth:`StatsEmitter.build` asks of an uplink."""

    is_connected = True

    def stats(self) -> dict[str, Any]:
        return {}

    def publish_heartbeat(self, heartbeat: dict[str, Any]) -> bool:
        return True


def _emitter(**kw: Any) -> StatsEmitter:
    uplink = cast("Uplink", _Uplink())
    return StatsEmitter(unit_id="unit-a", uplink=uplink, interval_s=60, pipeline_stats=dict, **kw)


def test_stats_emitter_adds_the_parts_and_leaves_out_a_failing_one() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("tracker gone")

    plain = _emitter().build()
    assert "cameras" not in plain
    assert "vehicles" not in plain
    hb = _emitter(cameras=lambda: CAMERAS, vehicles=broken).build()
    assert set(hb["cameras"]) == {"north", "side-2"}
    assert "vehicles" not in hb
    assert _both_ok(hb, m.HEARTBEAT_SCHEMA)
    bad = _emitter(
        cameras=lambda: {"north": {"status": "??"}},
        vehicles=lambda: {"tracks_per_min": 2.0, "active": 1},
    ).build()
    assert "cameras" not in bad  # refused by the helper, so the heartbeat stays valid
    assert bad["vehicles"] == {"tracks_per_min": 2.0, "active": 1}
    assert _both_ok(bad, m.HEARTBEAT_SCHEMA)
