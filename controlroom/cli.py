"""``phonewatch controlroom ...`` and ``phonewatch verify BUNDLE.zip``."""

from __future__ import annotations

import argparse
import getpass
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from controlroom.errors import ControlRoomError
from edge.core.errors import SignatureError

if TYPE_CHECKING:  # the web stack is imported only by the commands that need it
    from sqlalchemy.engine import Engine

    from controlroom.config import Config


def _config(args: argparse.Namespace) -> Config:
    from controlroom.config import load_config

    cfg = load_config(Path(args.config))
    _check_database_folder(cfg.database.url)
    return cfg


def _check_database_folder(url: str) -> None:
    """A SQLite database's folder must exist (it is not made here): say so, naming it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
    except ArgumentError:
        return  # the database layer reports a malformed URL
    if not u.drivername.startswith("sqlite") or u.database in (None, "", ":memory:"):
        return
    folder = Path(u.database).parent
    if not folder.is_dir():
        raise ControlRoomError(
            f"database.url {url}: the folder {folder} does not exist; create it (writable by "
            "the control room's user; the systemd unit's StateDirectory= makes "
            "/var/lib/phonewatch-controlroom) or point database.url elsewhere"
        )


def _engine(args: argparse.Namespace) -> Engine:
    from controlroom import db

    engine = db.make_engine(_config(args).database.url)
    db.migrate(engine)
    return engine


def cmd_serve(args: argparse.Namespace) -> int:
    from controlroom.app import ControlRoom

    if args.no_receiver and (args.command_name == "receive" or args.no_web):
        what = (
            "'controlroom receive' is a receiver only (no dashboard)"
            if args.command_name == "receive"
            else "--no-web with --no-receiver"
        )
        raise ControlRoomError(
            f"nothing to run: {what}, and --no-receiver turns the receiver "
            "off; for a dashboard only use 'controlroom serve --no-receiver'"
        )
    cfg = _config(args)
    if args.client_id:
        cfg = cfg.model_copy(
            update={"mqtt": cfg.mqtt.model_copy(update={"client_id": args.client_id})}
        )
    web = args.command_name == "serve" and not args.no_web
    room = ControlRoom(
        cfg, receiver=not args.no_receiver, web=web, retention=args.command_name == "serve"
    )

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        room.start()
        if web:
            print(f"phonewatch control room: dashboard at {room.url}", flush=True)
        if room.receiver is None:
            print(
                "no receiver (--no-receiver): this process stores no alerts; run "
                "'controlroom receive' (or serve) elsewhere for that",
                flush=True,
            )
        if room.receiver is not None:
            if not room.receiver.wait_ready(30):
                print(
                    f"warning: broker {cfg.mqtt.host}:{cfg.mqtt.port} not reachable yet; "
                    "still trying",
                    file=sys.stderr,
                    flush=True,
                )
            print(
                f"receiving from {cfg.mqtt.host}:{cfg.mqtt.port} as {cfg.mqtt.client_id} "
                f"(shared group {cfg.mqtt.share_group})",
                flush=True,
            )
        room.wait()
    except KeyboardInterrupt:
        pass
    finally:
        room.close()
        if room.receiver is not None:
            print(
                "receiver stats: " + json.dumps(room.receiver.stats(), sort_keys=True), flush=True
            )
    return 0


def cmd_add_unit(args: argparse.Namespace) -> int:
    from controlroom import crypto, db

    src = args.public_key
    path = Path(src)
    try:
        data: bytes | str = path.read_bytes() if path.is_file() else src
    except OSError as e:
        raise ControlRoomError(f"cannot read {path}: {e.strerror}") from None
    try:
        key = crypto.parse_public_key(data)
    except SignatureError as e:
        raise ControlRoomError(
            f"--public-key: {e} (give a PEM file or base64 of the raw 32 bytes)"
        ) from None
    import base64
    import re

    if not re.match(r"^[A-Za-z0-9_-]{1,64}$", args.unit_id):
        raise ControlRoomError(f"bad unit id {args.unit_id!r}: letters, digits, '-' and '_'")
    engine = _engine(args)
    raw_b64 = base64.b64encode(crypto.raw_public_bytes(key)).decode("ascii")
    new = db.upsert_unit(engine, args.unit_id, raw_b64, crypto.key_id(key))
    with engine.begin() as conn:
        db.record_audit(
            conn,
            username="cli",
            action="unit_add" if new else "unit_rekey",
            target=args.unit_id,
            detail=crypto.key_id(key),
        )
    print(
        f"{'registered' if new else 're-keyed'} unit {args.unit_id}: key id "
        f"{crypto.key_id(key)}, fingerprint {crypto.fingerprint(key)}"
    )
    return 0


def cmd_add_user(args: argparse.Namespace) -> int:
    from controlroom import users

    if args.password_file:
        try:
            password = Path(args.password_file).read_text(encoding="utf-8").splitlines()[0]
        except (OSError, IndexError) as e:
            raise ControlRoomError(
                f"cannot read a password from {args.password_file}: {e}"
            ) from None
    elif not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.username}: ")
        if getpass.getpass("again: ") != password:
            raise ControlRoomError("the passwords differ")
    users.add_user(_engine(args), args.username, password, replace=args.replace)
    print(f"user {args.username} {'updated' if args.replace else 'added'}")
    return 0


def cmd_disable_user(args: argparse.Namespace) -> int:
    from controlroom import users

    users.set_active(_engine(args), args.username, args.enable)
    print(f"user {args.username} {'enabled' if args.enable else 'disabled'}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from controlroom import db

    engine = db.make_engine(_config(args).database.url)
    print(f"database at schema version {db.migrate(engine)}")
    return 0


def cmd_dataset_create(args: argparse.Namespace) -> int:
    from controlroom import datasets

    made = datasets.create_dataset(_engine(args), user="cli", note=args.note)
    c = made.manifest["counts"]
    print(f"{'created' if made.new else 'unchanged, already'} dataset {made.id}")
    for split in datasets.SPLITS:
        print(
            f"  {split}: {c[split]['phone']} phone, {c[split]['no_phone']} no_phone "
            f"({made.manifest['unit_days'][split]} unit-days)"
        )
    if not sum(c["heldout"].values()):
        print("warning: the held-out split is empty (too few unit-days yet)", file=sys.stderr)
    return 0


def cmd_dataset_export(args: argparse.Namespace) -> int:
    from controlroom import datasets

    manifest = datasets.export_dataset(_engine(args), args.id, Path(args.out))
    print(
        f"dataset {manifest['id']}: {manifest['examples']} examples written to {args.out} "
        f"(evaluate with: phonewatch eval --model M --data {Path(args.out) / 'heldout'})"
    )
    return 0


def cmd_dataset_list(args: argparse.Namespace) -> int:
    from controlroom import datasets

    with _engine(args).connect() as conn:
        for d in datasets.list_datasets(conn, limit=1000):
            c = d["counts"]
            print(
                f"{d['id']}  {d['created']}  train {sum(c['train'].values())}  heldout "
                f"{sum(c['heldout'].values())}  {d.get('note') or ''}".rstrip()
            )
    return 0


def _add_dataset_parsers(
    crs: argparse._SubParsersAction,  # type: ignore[type-arg]
    with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
) -> None:
    ds = crs.add_parser(
        "dataset",
        help="labelled-example dataset versions (create, export, list)",
        description="Immutable, content-addressed snapshots of the "
        "labelled examples (reviews and labelled collected crops), split into "
        "train and held-out by unit and day.",
    )
    dss = ds.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    p = with_config(
        dss.add_parser(
            "create",
            help="snapshot every labelled example; prints "
            "the id (the same id again when nothing changed)",
        )
    )
    p.add_argument("--note", help="a note kept with the version (only when it is new)")
    p.set_defaults(func=cmd_dataset_create)
    p = with_config(
        dss.add_parser(
            "export",
            help="write a version as an image folder: "
            "<split>/<label>/<sha256>.jpg, index.csv, MANIFEST.json",
        )
    )
    p.add_argument("id", metavar="ID", help="the dataset id, or its first 8+ hex digits")
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="a new (or empty) folder; a non-empty one is refused",
    )
    p.set_defaults(func=cmd_dataset_export)
    p = with_config(dss.add_parser("list", help="the dataset versions, newest first"))
    p.set_defaults(func=cmd_dataset_list)


MODEL_KEY_NAME = "controlroom-model"
"""``model-key generate`` writes ``controlroom-model.sign.key`` and ``.sign.pub``."""


def cmd_model_key_generate(args: argparse.Namespace) -> int:
    from edge.common.signing import write_key_pair

    key, pub, kid = write_key_pair(MODEL_KEY_NAME, Path(args.out))
    print(f"model-signing key {kid}: private {key} (keep it in the control room), public {pub}")
    print(f'pin it on each unit: [models] trusted_keys = ["{pub.name}"]')
    return 0


def cmd_model_package(args: argparse.Namespace) -> int:
    from edge.common import model_package as mp
    from edge.common.signing import load_private_key

    model = Path(args.model)
    sidecar = Path(args.sidecar) if args.sidecar else model.with_suffix(".json")
    out = Path(args.out)
    if out.exists():
        raise ControlRoomError(f"{out} already exists; refusing to overwrite a package")
    blob = mp.build_package(
        model, sidecar, Path(args.card) if args.card else None, load_private_key(Path(args.key))
    )
    out.write_bytes(blob)
    pkg = mp.inspect_package(blob)
    print(
        f"{out}: {pkg['name']} {pkg['version']}, {len(blob)} bytes, sha256 "
        f"{mp.sha256_hex(blob)}, signed by {pkg['key_id']}"
    )
    return 0


def cmd_model_offer(args: argparse.Namespace) -> int:
    from controlroom import rollout
    from controlroom.receiver import CommandPublisher

    try:
        blob = Path(args.package).read_bytes()
    except OSError as e:
        raise ControlRoomError(f"cannot read {args.package}: {e.strerror}") from None
    cfg = _config(args)
    engine = _engine(args)
    pub = CommandPublisher(cfg.mqtt).start()
    try:
        if not pub.wait_ready(args.connect_timeout):
            raise ControlRoomError(
                f"cannot reach the broker {cfg.mqtt.host}:{cfg.mqtt.port}; nothing was offered"
            )
        offer, sent = rollout.offer_package(
            engine,
            pub,
            unit=args.unit,
            blob=blob,
            mode=args.mode,
            chunk_size=args.chunk_size,
            user="cli",
        )
    finally:
        pub.close()
    b = offer.body
    print(
        f"{b['name']} {b['version']} ({offer.sha256[:12]}) to {args.unit} as {b['mode']}: "
        f"{b['size']} bytes in {b['chunk_count']} chunk(s): {sent.detail}"
    )
    if sent.ok:
        print("the serving control room records the unit's progress ('controlroom model status')")
    return 0 if sent.ok else 1


def cmd_model_status(args: argparse.Namespace) -> int:
    from controlroom import rollout

    with _engine(args).connect() as conn:
        rows = rollout.list_rollouts(conn, unit=args.unit, limit=1000)
    for r in rows:
        have = "" if r.have is None else f" {r.have}/{r.chunk_count}"
        print(
            f"{r.unit}  {r.version}  {r.package_sha256[:12]}  {r.mode}  {r.state}{have}  "
            f"{r.detail or ''}".rstrip()
        )
    if not rows:
        print("no rollouts")
    return 0


def _add_model_parsers(
    crs: argparse._SubParsersAction,  # type: ignore[type-arg]
    with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
) -> None:
    mk = crs.add_parser("model-key", help="the control room's model-signing key")
    mks = mk.add_subparsers(dest="model_key_command", metavar="ACTION", required=True)
    p = mks.add_parser(
        "generate", help=f"write {MODEL_KEY_NAME}.sign.key and .sign.pub (never overwrites)"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the key pair")
    p.set_defaults(func=cmd_model_key_generate)

    md = crs.add_parser(
        "model",
        help="signed model packages: build, offer to a unit, status",
        description="Build a signed model package, offer it to a unit over MQTT in hashed "
        "chunks (the serving receiver resends what the unit reports missing), and show "
        "what each unit made of it. See docs/rollout.md.",
    )
    mds = md.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    p = mds.add_parser("package", help="build a signed package (.pwpkg) from a TFLite model")
    p.add_argument("--model", required=True, metavar="X.tflite", help="the TFLite model")
    p.add_argument("--sidecar", metavar="X.json", help="its sidecar (default: beside the model)")
    p.add_argument("--card", metavar="CARD.md", help="a model card to include")
    p.add_argument("--key", required=True, metavar="K", help="the model-signing private key")
    p.add_argument("--out", required=True, metavar="P.pwpkg", help="the package (new file)")
    p.set_defaults(func=cmd_model_package)
    p = with_config(mds.add_parser("offer", help="send a package to a unit"))
    p.add_argument("--unit", required=True, metavar="U", help="the unit's id")
    p.add_argument("--package", required=True, metavar="P.pwpkg", help="the signed package")
    p.add_argument("--mode", required=True, choices=("shadow", "live"), help="how the unit runs it")
    p.add_argument("--chunk-size", type=int, default=64 * 1024, help="bytes per chunk (64 KiB)")
    p.add_argument("--connect-timeout", type=float, default=10.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_model_offer)
    p = with_config(mds.add_parser("status", help="the rollouts, most recently updated first"))
    p.add_argument("--unit", metavar="U", help="only this unit")
    p.set_defaults(func=cmd_model_status)


def cmd_verify(args: argparse.Namespace) -> int:
    from controlroom.bundle import verify_bundle

    result = verify_bundle(Path(args.bundle))
    print(result.report())
    return 0 if result.ok else 1


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cr = sub.add_parser(
        "controlroom",
        help="control room: receive alerts, review dashboard",
        description="The control room: receives, verifies and stores alerts "
        "from every unit; operators review them on a dashboard.",
    )
    crs = cr.add_subparsers(dest="controlroom_command", metavar="ACTION", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config",
            required=True,
            help="control-room config (TOML); see deploy/controlroom/controlroom.toml",
        )
        return p

    for name, helptext in (
        ("serve", "receiver + retention + dashboard"),
        ("receive", "a receiver only (run several to share the load)"),
    ):
        p = with_config(crs.add_parser(name, help=helptext))
        p.add_argument("--client-id", help="MQTT client id (overrides mqtt.client_id)")
        if name == "serve":
            p.add_argument("--no-receiver", action="store_true", help="dashboard only")
            p.add_argument("--no-web", action="store_true", help="no dashboard")
        else:  # accepted, but a receiver has no dashboard, and no receiver is nothing
            p.add_argument("--no-receiver", action="store_true", help=argparse.SUPPRESS)
            p.add_argument("--no-web", action="store_true", help=argparse.SUPPRESS)
        p.set_defaults(func=cmd_serve, command_name=name)

    p = with_config(crs.add_parser("add-unit", help="register a unit's Ed25519 public key"))
    p.add_argument("unit_id", metavar="ID", help="the unit's id, as in its unit.id")
    p.add_argument(
        "--public-key",
        required=True,
        metavar="K",
        help="the unit's public key: a PEM file (<unit>.pub) or base64 of 32 bytes",
    )
    p.set_defaults(func=cmd_add_unit)

    p = with_config(crs.add_parser("add-user", help="add an operator (argon2 password hash)"))
    p.add_argument("username", help="the operator's login name")
    p.add_argument(
        "--password-file",
        help="read the password from the first line of a file (else from stdin, or a prompt)",
    )
    p.add_argument("--replace", action="store_true", help="set a new password for a user")
    p.set_defaults(func=cmd_add_user)

    p = with_config(
        crs.add_parser(
            "disable-user", help="disable an operator (ends their sessions); --enable undoes it"
        )
    )
    p.add_argument("username", help="the operator's login name")
    p.add_argument("--enable", action="store_true", help="enable instead")
    p.set_defaults(func=cmd_disable_user)

    p = with_config(crs.add_parser("migrate", help="bring the database schema up to date"))
    p.set_defaults(func=cmd_migrate)
    _add_dataset_parsers(crs, with_config)
    _add_model_parsers(crs, with_config)

    v = sub.add_parser(
        "verify",
        help="check an evidence bundle offline",
        description="Check an evidence bundle ZIP offline and say exactly what "
        "was verified. Exit 0 when every check passes, 1 otherwise.",
    )
    v.add_argument(
        "bundle", metavar="BUNDLE.zip", help="an evidence bundle exported from the dashboard"
    )
    v.set_defaults(func=cmd_verify)
