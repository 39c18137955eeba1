"""Ed25519 signatures: round trip, tampering, forged keys, evidence binding, key files, CLI."""

from __future__ import annotations

import base64
import copy
import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.app.cli import main as cli_main
from edge.common import signing as sg
from edge.core import messages as m
from edge.core.errors import SignatureError
from edge.core.ports import Detection
from tests.uplink.conftest import fix_dict

# A signed alert and the unit key that signed it.
Signed = tuple[dict[str, Any], sg.Ed25519PrivateKey]


@pytest.fixture
def signed(make_detection: Callable[..., Detection]) -> Signed:
    key = sg.generate_key()
    det = m.stamp_detection(make_detection(), fix=fix_dict(), gps_state="3d", max_fix_age_s=2.0)
    alert = m.build_alert(det, unit="unit-a", seq=3)
    return sg.sign_alert(alert, key), key


def test_round_trip_through_the_wire(signed: Signed) -> None:
    alert, key = signed
    received = json.loads(m.encode(alert))
    assert sg.verify_alert(received, key.public_key())
    assert received["signature"]["key_id"] == sg.key_id(key.public_key())
    # a receiver that re-orders keys or re-indents still verifies
    assert sg.verify_alert(json.loads(json.dumps(received, indent=2)), key.public_key())


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("seq",), 4),
        (("unit",), "unit-b"),
        (("score",), 0.5),
        (("time",), "2020-01-01T00:00:00Z"),
        (("evidence", "frame_sha256"), "0" * 64),
        (("evidence", "frame_bytes"), 1),
        (("fix", "lat"), 48.0),
        (("model", "sha256"), "cd" * 32),
        (("roi",), "lane9"),
    ],
)
def test_any_change_breaks_the_signature(
    signed: Signed, path: tuple[str, ...], value: object
) -> None:
    alert, key = signed
    bad = copy.deepcopy(alert)
    target = bad
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    assert not sg.verify_alert(bad, key.public_key())


def test_forged_with_another_key_fails(signed: Signed) -> None:
    alert, key = signed
    forger = sg.generate_key()
    forged = sg.sign_alert({**alert, "score": 0.99}, forger)
    assert sg.verify_alert(forged, forger.public_key())  # self-consistent...
    assert not sg.verify_alert(forged, key.public_key())  # ...but not from this unit


@pytest.mark.parametrize(
    "sig",
    [
        None,
        "x",
        {"alg": "Ed25519"},
        {"alg": "Ed25519", "value": 5},
        {"alg": "Ed25519", "value": "not base64!"},
        {"alg": "HS256", "value": base64.b64encode(b"0" * 64).decode()},
        {"alg": "Ed25519", "value": base64.b64encode(b"0" * 64).decode()},
    ],
)
def test_malformed_signature_is_false_not_an_exception(signed: Signed, sig: object) -> None:
    alert, key = signed
    assert not sg.verify_alert({**alert, "signature": sig}, key.public_key())


def test_unencodable_alert_does_not_raise(signed: Signed) -> None:
    alert, key = signed
    assert not sg.verify_alert({**alert, "score": float("nan")}, key.public_key())


def test_evidence_bound_by_hash_and_size(make_detection: Callable[..., Detection]) -> None:
    det = make_detection()
    jpeg = Path(det.evidence.frame_path).read_bytes()
    alert = m.build_alert(det, unit="unit-a", seq=1)
    assert sg.verify_evidence(alert, jpeg)
    assert not sg.verify_evidence(alert, jpeg[:-1])
    assert not sg.verify_evidence(alert, jpeg[:-1] + b"\x00")
    assert not sg.verify_evidence({}, jpeg)


def test_key_files(tmp_path: Path) -> None:
    key_path, pub_path, kid = sg.write_key_pair("unit-a", tmp_path / "keys")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = sg.load_private_key(key_path)
    pub = sg.load_public_key(pub_path)
    assert sg.key_id(pub) == kid == sg.key_id(key.public_key())
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert sg.key_id(sg.load_public_key(base64.b64encode(raw).decode())) == kid
    with pytest.raises(SignatureError, match="refusing to overwrite"):
        sg.write_key_pair("unit-a", tmp_path / "keys")
    assert sg.load_private_key(key_path).public_key() == pub  # unchanged


def test_key_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SignatureError, match="keys generate"):
        sg.load_private_key(tmp_path / "missing.key")
    junk = tmp_path / "junk.key"
    junk.write_text("hello")
    with pytest.raises(SignatureError, match="not an unencrypted PEM"):
        sg.load_private_key(junk)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    wrong = tmp_path / "ec.key"
    wrong.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(SignatureError, match="Ed25519"):
        sg.load_private_key(wrong)
    with pytest.raises(SignatureError):
        sg.load_public_key(b"not a key")


def test_cli_keys_generate_and_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_detection: Callable[..., Detection]
) -> None:
    out = tmp_path / "k"
    assert cli_main(["keys", "generate", "--unit", "unit-7", "--out", str(out)]) == 0
    assert "key id" in capsys.readouterr().out
    assert (out / "unit-7.sign.key").exists()
    assert (out / "unit-7.sign.pub").exists()
    assert cli_main(["keys", "generate", "--unit", "unit-7", "--out", str(out)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert cli_main(["keys", "generate", "--unit", "bad/id", "--out", str(out)]) == 1

    det = make_detection()
    alert = sg.sign_alert(
        m.build_alert(det, unit="unit-7", seq=1), sg.load_private_key(out / "unit-7.sign.key")
    )
    (tmp_path / "a.json").write_bytes(m.encode(alert))
    args = [
        "keys",
        "verify",
        "--pub",
        str(out / "unit-7.sign.pub"),
        str(tmp_path / "a.json"),
        "--evidence",
        det.evidence.frame_path,
    ]
    assert cli_main(args) == 0
    assert "signature OK" in capsys.readouterr().out
    (tmp_path / "a.json").write_bytes(m.encode({**alert, "score": 0.1}))
    assert cli_main(args) == 1
    assert "does NOT verify" in capsys.readouterr().err


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_KEY = sg.generate_key()


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=10), _json, max_size=8))
def test_any_json_document_survives_the_wire_and_verifies(doc: dict[str, Any]) -> None:
    doc.pop("signature", None)
    signed = sg.sign_alert(doc, _KEY)
    received = json.loads(m.encode(signed).decode("utf-8"))
    assert m.signing_bytes(received) == m.signing_bytes(doc)
    assert sg.verify_alert(received, _KEY.public_key())


def test_only_the_canonical_base64_of_a_signature_is_accepted(signed: Signed) -> None:
    """64 bytes encode to 88 base64 characters whose last data character carries 4 unused
    low bits: flipping them decodes to the same signature. Such a re-encoding (or padding and
    line-break variants) is refused, so a replayed alert is byte for byte the one stored."""
    import base64

    alert, key = signed
    value = alert["signature"]["value"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(value[-3])
    twin = value[:-3] + alphabet[last ^ 0b0001] + value[-2:]
    assert twin != value
    assert base64.b64decode(twin) == base64.b64decode(value)  # the same 64 bytes
    for variant in (twin, value[:-2], value[:44] + "\n" + value[44:]):
        forged = {**alert, "signature": {**alert["signature"], "value": variant}}
        assert not sg.verify_alert(forged, key.public_key())
        assert "canonical" in (
            sg.signature_problem(forged, key.public_key()) or ""
        ) or "base64" in (sg.signature_problem(forged, key.public_key()) or "")
    assert sg.signature_problem(alert, key.public_key()) is None
