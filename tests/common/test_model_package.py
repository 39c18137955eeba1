"""Signed model packages: build, verify (every refusal says why), install. Pure: no broker."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from edge.adapters.classifier import LiteRTClassifier
from edge.common import model_package as mp
from edge.common.signing import Ed25519PrivateKey, generate_key, key_id

DATA = Path(__file__).resolve().parents[1] / "data"
TFLITE = DATA / "brightness_int8.tflite"
SIDECAR = DATA / "brightness_int8.json"


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return generate_key()


@pytest.fixture(scope="module")
def blob(key: Ed25519PrivateKey, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    card = tmp_path_factory.mktemp("card") / "CARD.md"
    card.write_text("# brightness test model\n")
    return mp.build_package(TFLITE, SIDECAR, card, key)


def members(blob: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
        out = []
        for info in tar:
            f = tar.extractfile(info)
            out.append((info.name, f.read() if f else b""))
        return out


def tar_of(files: list[tuple[str, bytes]], *, kind: bytes = tarfile.REGTYPE) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.type = len(data), kind
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def resign(files: list[tuple[str, bytes]], key: Ed25519PrivateKey, **changes: bytes) -> bytes:
    """The package with some members replaced and a fresh manifest signed by ``key``."""
    d = dict(files)
    d.update(changes)
    manifest = json.loads(d["manifest.json"])
    manifest["key_id"] = key_id(key.public_key())
    manifest["files"] = [
        {"name": n, "size": len(d[n]), "sha256": hashlib.sha256(d[n]).hexdigest()}
        for n in mp.CONTENT
        if n in d
    ]
    d["manifest.json"] = json.dumps(manifest).encode()
    d["manifest.sig"] = base64.b64encode(key.sign(d["manifest.json"]))
    return tar_of(list(d.items()))


def test_a_built_package_verifies_and_installs_openable(
    blob: bytes, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    names = [n for n, _ in members(blob)]
    assert names == ["manifest.json", "manifest.sig", "model.tflite", "model.json", "CARD.md"]
    pkg = mp.verify_package(blob, [generate_key().public_key(), key.public_key()])
    assert (pkg.name, pkg.version) == ("brightness-int8", "test-1")
    assert pkg.sha256 == hashlib.sha256(blob).hexdigest()
    assert pkg.model_sha256 == hashlib.sha256(TFLITE.read_bytes()).hexdigest()
    assert pkg.manifest["key_id"] == key_id(key.public_key())
    assert pkg.card == b"# brightness test model\n"

    inst = mp.install(pkg, tmp_path / "models")
    assert inst.dir == tmp_path / "models" / f"test-1-{pkg.sha256[:12]}"
    assert inst.tflite.read_bytes() == TFLITE.read_bytes()
    assert sorted(p.name for p in inst.dir.iterdir()) == sorted(
        ["model.tflite", "model.json", "CARD.md", "manifest.json", "manifest.sig", "package.sha256"]
    )
    assert [p.name for p in (tmp_path / "models").iterdir()] == [inst.dir.name]  # no temp left
    with LiteRTClassifier.open(inst.tflite, sidecar=inst.sidecar) as clf:
        assert clf.spec.version == "test-1"

    mtime = inst.tflite.stat().st_mtime_ns
    assert mp.install(pkg, tmp_path / "models") == inst  # identical install reused
    assert inst.tflite.stat().st_mtime_ns == mtime
    inst.tflite.write_bytes(b"damaged")
    assert mp.install(pkg, tmp_path / "models").tflite.read_bytes() == TFLITE.read_bytes()
    assert mp.find_installed(tmp_path / "models", "test-1", pkg.sha256, [key.public_key()]) == inst
    assert mp.find_installed(tmp_path / "models", "test-1", pkg.sha256, []) is None


def test_bad_signature_and_unpinned_key_are_refused(blob: bytes, key: Ed25519PrivateKey) -> None:
    with pytest.raises(mp.ModelPackageError, match="not pinned on this unit"):
        mp.verify_package(blob, [generate_key().public_key()])
    files = members(blob)
    forged = dict(files)
    forged["manifest.sig"] = base64.b64encode(generate_key().sign(forged["manifest.json"]))
    with pytest.raises(mp.ModelPackageError, match="bad signature: manifest.sig does not verify"):
        mp.verify_package(tar_of(list(forged.items())), [key.public_key()])
    forged["manifest.sig"] = b"not base64!"
    with pytest.raises(mp.ModelPackageError, match="bad signature: manifest.sig is not base64"):
        mp.verify_package(tar_of(list(forged.items())), [key.public_key()])
    # a manifest edited after signing (a larger size claimed)
    manifest = json.loads(dict(files)["manifest.json"])
    manifest["version"] = "test-2"
    forged = dict(files)
    forged["manifest.json"] = json.dumps(manifest).encode()
    with pytest.raises(mp.ModelPackageError, match="bad signature"):
        mp.verify_package(tar_of(list(forged.items())), [key.public_key()])
    no_sig = [(n, d) for n, d in files if n != "manifest.sig"]
    with pytest.raises(mp.ModelPackageError, match="lacks manifest.sig"):
        mp.verify_package(tar_of(no_sig), [key.public_key()])


def test_a_file_differing_from_the_signed_manifest_is_refused(
    blob: bytes, key: Ed25519PrivateKey
) -> None:
    files = dict(members(blob))
    model = bytearray(files["model.tflite"])
    model[-1] ^= 1
    files["model.tflite"] = bytes(model)
    with pytest.raises(mp.ModelPackageError, match="model.tflite: SHA-256 differs"):
        mp.verify_package(tar_of(list(files.items())), [key.public_key()])
    files["model.tflite"] += b"x"
    with pytest.raises(mp.ModelPackageError, match="the signed manifest says 2232"):
        mp.verify_package(tar_of(list(files.items())), [key.public_key()])
    files = dict(members(blob))
    del files["CARD.md"]
    with pytest.raises(mp.ModelPackageError, match="lists .* but the package holds"):
        mp.verify_package(tar_of(list(files.items())), [key.public_key()])


@pytest.mark.parametrize("cut", [100, 700, 1500, 3000])
def test_truncated_or_not_a_tar_is_refused(blob: bytes, key: Ed25519PrivateKey, cut: int) -> None:
    with pytest.raises(mp.ModelPackageError, match="truncated"):
        mp.verify_package(blob[:cut], [key.public_key()])


def test_not_a_tar_is_refused(key: Ed25519PrivateKey) -> None:
    with pytest.raises(mp.ModelPackageError, match="not a model package"):
        mp.verify_package(TFLITE.read_bytes(), [key.public_key()])
    with pytest.raises(mp.ModelPackageError, match="not a model package"):
        mp.verify_package(b"", [key.public_key()])


def test_unexpected_duplicate_and_traversing_members_are_refused(
    blob: bytes, key: Ed25519PrivateKey
) -> None:
    files = members(blob)
    pub = [key.public_key()]
    with pytest.raises(mp.ModelPackageError, match="unexpected package member 'extra.bin'"):
        mp.verify_package(tar_of([*files, ("extra.bin", b"x")]), pub)
    with pytest.raises(mp.ModelPackageError, match="model.json appears twice"):
        mp.verify_package(tar_of([*files, ("model.json", b"{}")]), pub)
    with pytest.raises(mp.ModelPackageError, match="path traversal"):
        mp.verify_package(tar_of([("../model.tflite", b"x"), *files]), pub)
    with pytest.raises(mp.ModelPackageError, match="path traversal"):
        mp.verify_package(tar_of([("/etc/model.tflite", b"x"), *files]), pub)
    with pytest.raises(mp.ModelPackageError, match="not a regular file"):
        mp.verify_package(tar_of([("CARD.md", b"")], kind=tarfile.SYMTYPE), pub)


def test_signed_but_not_tflite_or_sidecar_not_matching_is_refused(
    blob: bytes, key: Ed25519PrivateKey
) -> None:
    """Even correctly signed, a package must hold a TFLite model and its own sidecar."""
    files, pub = members(blob), [key.public_key()]
    with pytest.raises(mp.ModelPackageError, match="model.tflite is not a TFLite model"):
        mp.verify_package(resign(files, key, **{"model.tflite": b"\x00" * 64}), pub)
    other = json.loads(SIDECAR.read_bytes())
    other["sha256"] = "0" * 64
    with pytest.raises(mp.ModelPackageError, match="does not match the model: its sha256 is 000"):
        mp.verify_package(resign(files, key, **{"model.json": json.dumps(other).encode()}), pub)
    other = json.loads(SIDECAR.read_bytes())
    del other["input"]
    with pytest.raises(mp.ModelPackageError, match="sidecar does not validate: .*'input'"):
        mp.verify_package(resign(files, key, **{"model.json": json.dumps(other).encode()}), pub)


def test_build_refuses_what_a_unit_would_refuse(key: Ed25519PrivateKey, tmp_path: Path) -> None:
    side = json.loads(SIDECAR.read_bytes())
    side["sha256"] = "1" * 64
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(side))
    with pytest.raises(mp.ModelPackageError, match="does not match the model"):
        mp.build_package(TFLITE, bad, None, key)
    with pytest.raises(mp.ModelPackageError, match="not a TFLite model"):
        mp.build_package(SIDECAR, SIDECAR, None, key)
    with pytest.raises(mp.ModelPackageError, match="cannot read the model"):
        mp.build_package(tmp_path / "nope.tflite", SIDECAR, None, key)
    blob = mp.build_package(TFLITE, SIDECAR, None, key)
    assert mp.verify_package(blob, [key.public_key()]).card is None
    assert mp.inspect_package(blob)["version"] == "test-1"
