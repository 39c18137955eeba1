"""No test sleeps to synchronise (issue 16): a fixed ``time.sleep`` is too short on a loaded
machine and wasted time on an idle one. Wait for a positive signal instead: an event, a
counter, a message sent after the ones under test, or ``tests.waiting.wait_until`` polling a
condition; step a ``ManualClock`` where time passing is the behaviour under test.

Every ``time.sleep(...)`` call under tests/ (however ``time`` or ``sleep`` was imported, and in
Python source kept in string literals, such as a child process's script) must be in
``ALLOWED`` with the reason it is not synchronisation.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

ALLOWED: dict[str, tuple[int, str]] = {
    # path from the repo root: (at most this many sleep calls, why they are not synchronising)
    "tests/waiting.py": (1, "wait_until's own poll step, between looks at the condition"),
    "tests/uplink/test_mqtt.py": (
        1,
        "in the CHILD script: paces the child's publishing so the kill lands mid-stream",
    ),
}


def sleep_calls(source: str, filename: str = "<test>") -> list[int]:
    """Line numbers of the ``time.sleep`` calls in ``source``, including calls through an
    alias (``import time as t``, ``from time import sleep as nap``) and calls in string
    literals that are themselves Python (reported at the literal's line)."""
    tree = ast.parse(source, filename=filename)
    modules, functions = {"time"}, set[str]()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(a.asname or a.name for a in node.names if a.name == "time")
        elif isinstance(node, ast.ImportFrom) and node.module == "time" and node.level == 0:
            functions.update(a.asname or a.name for a in node.names if a.name == "sleep")
    lines: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if (
                isinstance(f, ast.Attribute)
                and f.attr == "sleep"
                and isinstance(f.value, ast.Name)
                and f.value.id in modules
            ) or (isinstance(f, ast.Name) and f.id in functions):
                lines.append(node.lineno)
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str) and "sleep" in node.value
        ):
            try:
                inner = sleep_calls(textwrap.dedent(node.value), filename)
            except SyntaxError:  # prose, not a script
                continue
            lines.extend(node.lineno for _ in inner)
    return sorted(lines)


def sleeps_under(root: Path) -> dict[str, list[int]]:
    found = {}
    for f in sorted((root / "tests").rglob("*.py")):
        if f.resolve() == Path(__file__).resolve():
            continue  # this file's samples are data
        lines = sleep_calls(f.read_text(encoding="utf-8"), str(f))
        if lines:
            found[f.relative_to(root).as_posix()] = lines
    return found


@pytest.mark.slow
def test_no_test_sleeps_to_synchronise() -> None:
    found = sleeps_under(REPO)
    assert "tests/waiting.py" in found, "the checker finds nothing: is it looking in tests/?"
    over = {
        path: lines for path, lines in found.items() if len(lines) > ALLOWED.get(path, (0, ""))[0]
    }
    assert not over, (
        f"time.sleep in tests at {over}: wait for a positive signal instead "
        "(an event, a counter, tests.waiting.wait_until, a ManualClock), or add "
        "the file to ALLOWED with the reason it is not synchronisation"
    )


def test_every_allowance_has_a_reason() -> None:
    for path, (count, reason) in ALLOWED.items():
        assert (REPO / path).is_file(), path
        assert count >= 1, path
        assert reason.strip(), path


@pytest.mark.parametrize(
    ("source", "count"),
    [
        ("import time\ntime.sleep(1)\n", 1),
        ("import time as t\nt.sleep(0.1)\n", 1),
        ("from time import sleep\nsleep(0.1)\n", 1),
        ("from time import sleep as nap\nnap(0.1)\n", 1),
        ("def f():\n    import time\n    time.sleep(0.5)\n", 1),
        ('CHILD = """\nimport time\ntime.sleep(0.002)\n"""\n', 1),
        ('CHILD = textwrap.dedent("""\n    import time\n    time.sleep(0.002)\n""")\n', 1),
        ("import time\nx = 'time.sleep(1)'\n", 1),  # a one-line script is still a script
        ("import time\nt0 = time.monotonic()\nev.wait(1)\n", 0),
        ("def sleep(s): ...\nsleep(1)\nclock.sleep(1)\n", 0),  # not time's
        ("'''time.sleep to synchronise: don't'''\n", 0),  # prose
    ],
)
def test_the_checker_finds_sleeps_however_spelt(source: str, count: int) -> None:
    assert len(sleep_calls(source)) == count


def test_the_checker_reports_files_under_tests(tmp_path: Path) -> None:
    (tmp_path / "tests" / "app").mkdir(parents=True)
    (tmp_path / "tests" / "app" / "test_x.py").write_text("import time\n\n\ntime.sleep(0.3)\n")
    (tmp_path / "tests" / "test_ok.py").write_text("import time\nprint(time.time())\n")
    assert sleeps_under(tmp_path) == {"tests/app/test_x.py": [4]}
