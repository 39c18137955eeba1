"""Signed model packages: one file that carries a model to a unit, and the checks a unit makes
before it keeps one.

A package is an uncompressed tar (stdlib :mod:`tarfile`) holding, in this order:

``manifest.json``
    ``{"schema": "phonewatch.model_package", "format": 1, "name", "version", "created",
    "key_id", "files": [{"name", "size", "sha256"}, ...]}``: what the package holds, with the
    size and SHA-256 of every other member.
``manifest.sig``
    base64 of the Ed25519 signature over the exact bytes of ``manifest.json``, made with the
    control room's model-signing key (``controlroom model-key generate``).
``model.tflite``, ``model.json``
    the model and its sidecar (:mod:`edge.core.model_spec`); the sidecar's ``sha256`` must be
    the model's.
``CARD.md``
    the model card (optional).

:func:`verify_package` trusts nothing in the blob until the signature checks out against a key
the unit pinned (``[models] trusted_keys``); every refusal is a :class:`ModelPackageError`
whose message says what is wrong. :func:`install` writes a verified package into its own
folder atomically.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.common.signing import key_id
from edge.core.errors import ModelError, PhonewatchError
from edge.core.messages import utc_iso
from edge.core.model_spec import parse_spec

SCHEMA = "phonewatch.model_package"
FORMAT = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MODEL = "model.tflite"
SIDECAR = "model.json"
CARD = "CARD.md"
PACKAGE_SHA256 = "package.sha256"
"""Written by :func:`install` beside the package's files: the SHA-256 of the whole package blob,
so a unit offered the same package again can find it installed."""
CONTENT = (MODEL, SIDECAR, CARD)
"""The members the manifest lists (``CARD.md`` may be absent)."""
MAX_BYTES = 64 * 1024 * 1024
"""The largest package accepted (the shipped model's package is about 0.3 MB)."""
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
TFLITE_IDENTIFIER = b"TFL3"


class ModelPackageError(PhonewatchError, ValueError):
    """A model package is malformed, unsigned, signed by an unpinned key or does not match its
    manifest; the message says which."""


@dataclass(frozen=True)
class VerifiedPackage:
    """A package whose signature and every file checked out."""

    name: str
    version: str
    sha256: str
    """SHA-256 of the whole package blob (what the control room offers by)."""
    model_sha256: str
    manifest: dict[str, Any]
    manifest_bytes: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    """The ``manifest.sig`` member as it was (base64 text)."""
    tflite: bytes = field(repr=False)
    sidecar: bytes = field(repr=False)
    card: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class InstalledPackage:
    """A verified package on disk: open it with
    ``LiteRTClassifier.open(pkg.tflite, sidecar=pkg.sidecar)``."""

    dir: Path
    tflite: Path
    sidecar: Path
    name: str
    version: str
    sha256: str


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------ build


def build_package(tflite: Path, sidecar: Path, card: Path | None, key: Ed25519PrivateKey) -> bytes:
    """The package blob for a model, its sidecar and optional card, signed with ``key``.

    Refuses (ModelPackageError) what a unit would refuse: a file that is not TFLite, a sidecar
    that does not validate or whose ``sha256`` is not the model's."""
    model = _read(tflite, "model")
    side = _read(sidecar, "sidecar")
    card_bytes = _read(card, "card") if card is not None else None
    name, version = _check_content(model, side, where=str(sidecar))
    files = {MODEL: model, SIDECAR: side}
    if card_bytes is not None:
        files[CARD] = card_bytes
    created = time.time()
    manifest = {
        "schema": SCHEMA,
        "format": FORMAT,
        "name": name,
        "version": version,
        "created": utc_iso(created),
        "key_id": key_id(key.public_key()),
        "files": [{"name": n, "size": len(b), "sha256": sha256_hex(b)} for n, b in files.items()],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, indent=1).encode("utf-8") + b"\n"
    sig = base64.b64encode(key.sign(manifest_bytes))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for n, data in [(MANIFEST, manifest_bytes), (SIGNATURE, sig), *files.items()]:
            info = tarfile.TarInfo(n)
            info.size, info.mode, info.mtime = len(data), 0o644, int(created)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ModelPackageError(f"cannot read the {what} {path}: {e.strerror}") from None


def _check_content(model: bytes, side: bytes, *, where: str) -> tuple[str, str]:
    """``(name, version)`` of a TFLite model and its matching, valid sidecar."""
    if len(model) < 8 or model[4:8] != TFLITE_IDENTIFIER:
        raise ModelPackageError(
            f"{MODEL} is not a TFLite model (no 'TFL3' flatbuffer identifier at bytes 4..8)"
        )
    try:
        spec = parse_spec(json.loads(side), where=f"sidecar {where}")
    except json.JSONDecodeError as e:
        raise ModelPackageError(f"sidecar {where} is not valid JSON: {e}") from None
    except ModelError as e:
        raise ModelPackageError(f"sidecar does not validate: {e}") from None
    got = sha256_hex(model)
    if spec.sha256 != got:
        raise ModelPackageError(
            f"sidecar {where} does not match the model: its sha256 is {spec.sha256}, the "
            f"model's is {got}"
        )
    if not _VERSION_RE.match(spec.version):
        raise ModelPackageError(
            f"sidecar {where}: version {spec.version[:80]!r} must be 1-64 letters, digits, "
            "'.', '_', '+' or '-' (it names the install folder)"
        )
    return spec.name, spec.version


# ----------------------------------------------------------------------------------- verify


def verify_package(blob: bytes, trusted: Sequence[Ed25519PublicKey]) -> VerifiedPackage:
    """Check a package against the pinned keys ``trusted``; raises ModelPackageError."""
    if len(blob) > MAX_BYTES:
        raise ModelPackageError(f"package is {len(blob)} bytes, over the {MAX_BYTES} limit")
    members = read_members(blob)
    manifest_bytes, sig = members[MANIFEST], members[SIGNATURE]
    manifest = parse_manifest(manifest_bytes)
    _check_signature(manifest, manifest_bytes, sig, trusted)
    _check_files(manifest, members)
    name, version = _check_content(members[MODEL], members[SIDECAR], where="in the package")
    if (name, version) != (manifest["name"], manifest["version"]):
        raise ModelPackageError(
            f"manifest names {manifest['name']} {manifest['version']}, the sidecar {name} {version}"
        )
    return VerifiedPackage(
        name=name,
        version=version,
        sha256=sha256_hex(blob),
        model_sha256=sha256_hex(members[MODEL]),
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        signature=sig,
        tflite=members[MODEL],
        sidecar=members[SIDECAR],
        card=members.get(CARD),
    )


def read_members(blob: bytes) -> dict[str, bytes]:
    """The members of a package tar by name, structurally checked (no trust implied): only
    regular files with the expected names, each once; manifest, signature, model and sidecar
    present."""
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
            for info in tar:
                _check_member(info, out)
                f = tar.extractfile(info)
                data = f.read() if f is not None else b""
                if len(data) != info.size:
                    raise ModelPackageError(f"package is truncated inside {info.name}")
                out[info.name] = data
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ModelPackageError(
            f"not a model package, or truncated: not a readable tar archive ({e})"
        ) from None
    missing = [n for n in (MANIFEST, SIGNATURE, MODEL, SIDECAR) if n not in out]
    if missing:
        raise ModelPackageError(
            f"package lacks {', '.join(missing)} (truncated, or not a model package)"
        )
    return out


def _check_member(info: tarfile.TarInfo, seen: dict[str, bytes]) -> None:
    name = info.name
    if name.startswith("/") or ".." in name.split("/") or "/" in name or "\\" in name:
        raise ModelPackageError(f"package member {name[:100]!r} is a path (path traversal refused)")
    if name not in (MANIFEST, SIGNATURE, *CONTENT):
        raise ModelPackageError(f"unexpected package member {name[:100]!r}")
    if not info.isreg():
        raise ModelPackageError(f"package member {name} is not a regular file")
    if name in seen:
        raise ModelPackageError(f"package member {name} appears twice")


def parse_manifest(manifest_bytes: bytes) -> dict[str, Any]:
    """The manifest's content, checked for shape (not for trust)."""
    try:
        manifest = json.loads(manifest_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelPackageError(f"{MANIFEST} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise ModelPackageError(f"{MANIFEST} is not a phonewatch model package manifest")
    if manifest.get("format") != FORMAT:
        raise ModelPackageError(
            f"{MANIFEST}: format {manifest.get('format')!r}; this version reads {FORMAT}"
        )
    for k in ("name", "version", "created", "key_id"):
        if not isinstance(manifest.get(k), str):
            raise ModelPackageError(f"{MANIFEST}: {k!r} missing or not a string")
    files = manifest.get("files")
    if not isinstance(files, list) or not all(
        isinstance(f, dict)
        and isinstance(f.get("name"), str)
        and isinstance(f.get("size"), int)
        and isinstance(f.get("sha256"), str)
        for f in files
    ):
        raise ModelPackageError(f"{MANIFEST}: 'files' must list name, size and sha256 of each")
    return manifest


def _check_signature(
    manifest: dict[str, Any],
    manifest_bytes: bytes,
    sig: bytes,
    trusted: Sequence[Ed25519PublicKey],
) -> None:
    pinned = {key_id(k): k for k in trusted}
    kid = manifest["key_id"]
    key = pinned.get(kid)
    if key is None:
        raise ModelPackageError(
            f"package is signed by key {kid[:16]!r}, which is not pinned on this unit "
            f"(pinned: {', '.join(sorted(pinned)) or 'none'})"
        )
    try:
        raw = base64.b64decode(sig.strip(), validate=True)
    except (ValueError, binascii.Error):
        raise ModelPackageError(f"bad signature: {SIGNATURE} is not base64") from None
    try:
        key.verify(raw, manifest_bytes)
    except (InvalidSignature, ValueError):
        raise ModelPackageError(
            f"bad signature: {SIGNATURE} does not verify over {MANIFEST} with key {kid}"
        ) from None


def _check_files(manifest: dict[str, Any], members: dict[str, bytes]) -> None:
    listed = {f["name"]: f for f in manifest["files"]}
    if len(listed) != len(manifest["files"]):
        raise ModelPackageError(f"{MANIFEST} lists a file twice")
    present = {n for n in members if n in CONTENT}
    if set(listed) != present:
        raise ModelPackageError(
            f"{MANIFEST} lists {sorted(listed)} but the package holds {sorted(present)}"
        )
    for n, f in listed.items():
        data = members[n]
        if len(data) != f["size"]:
            raise ModelPackageError(
                f"{n} is {len(data)} bytes, the signed manifest says {f['size']}"
            )
        if sha256_hex(data) != f["sha256"]:
            raise ModelPackageError(f"{n}: SHA-256 differs from the signed manifest")


# ---------------------------------------------------------------------------------- install


def install_dir_name(version: str, package_sha256: str) -> str:
    return f"{version}-{package_sha256[:12]}"


def install(pkg: VerifiedPackage, models_dir: Path) -> InstalledPackage:
    """Write ``pkg`` to ``<models_dir>/<version>-<sha256[:12]>/`` atomically (a temporary folder,
    fsync'd, renamed into place); an identical install already there is reused."""
    target = models_dir / install_dir_name(pkg.version, pkg.sha256)
    files = {
        MANIFEST: pkg.manifest_bytes,
        SIGNATURE: pkg.signature,
        MODEL: pkg.tflite,
        SIDECAR: pkg.sidecar,
        PACKAGE_SHA256: pkg.sha256.encode("ascii") + b"\n",
    }
    if pkg.card is not None:
        files[CARD] = pkg.card
    installed = InstalledPackage(
        dir=target,
        tflite=target / MODEL,
        sidecar=target / SIDECAR,
        name=pkg.name,
        version=pkg.version,
        sha256=pkg.sha256,
    )
    if target.is_dir() and _same_files(target, files):
        return installed
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        tmp = models_dir / f".install-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            for n, data in files.items():
                _write_synced(tmp / n, data)
            _fsync_dir(tmp)
            if target.exists():  # a damaged or partial copy: replaced, never trusted
                shutil.rmtree(target)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(models_dir)
    except OSError as e:
        raise ModelPackageError(f"cannot install into {target}: {e.strerror or e}") from None
    return installed


def _same_files(folder: Path, files: dict[str, bytes]) -> bool:
    try:
        return all((folder / n).read_bytes() == data for n, data in files.items())
    except OSError:
        return False


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def find_installed(
    models_dir: Path, version: str, package_sha256: str, trusted: Sequence[Ed25519PublicKey]
) -> InstalledPackage | None:
    """The install of this exact package, if it is on disk and still verifies; else None."""
    folder = models_dir / install_dir_name(version, package_sha256)
    try:
        if (folder / PACKAGE_SHA256).read_text("ascii").strip() != package_sha256:
            return None
        members = {
            n: (folder / n).read_bytes()
            for n in (MANIFEST, SIGNATURE, *CONTENT)
            if (folder / n).is_file()
        }
    except OSError:
        return None
    try:
        manifest = parse_manifest(members[MANIFEST])
        _check_signature(manifest, members[MANIFEST], members[SIGNATURE], trusted)
        _check_files(manifest, members)
        name, got_version = _check_content(members[MODEL], members[SIDECAR], where=str(folder))
    except (ModelPackageError, KeyError):
        return None
    if got_version != version:
        return None
    return InstalledPackage(
        dir=folder,
        tflite=folder / MODEL,
        sidecar=folder / SIDECAR,
        name=name,
        version=version,
        sha256=package_sha256,
    )


def inspect_package(blob: bytes) -> dict[str, Any]:
    """The manifest of a package, structurally checked but NOT verified (for the control room,
    which shows what it is about to offer; units always :func:`verify_package`)."""
    return parse_manifest(read_members(blob)[MANIFEST])
