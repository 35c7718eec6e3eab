"""The pytest plugin is loaded by every pytest run where trio_smtp is installed: it must
not import Trio or the server until a fixture or helper is used."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

# Installed (nox, CI), the plugin comes by entry point, and naming it again with -p is an
# error; from a source tree (PYTHONPATH) it has none and is loaded by name.
INSTALLED = any(ep.name == "trio_smtp" for ep in entry_points(group="pytest11"))
PLUGIN = [] if INSTALLED else ["-p", "trio_smtp.testing"]

HEAVY = ("trio", "trio_smtp._server", "trio_smtp._connection_task", "trio_smtp._testing")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


def test_importing_the_plugin_imports_neither_trio_nor_the_server() -> None:
    result = _run(
        f"""
        import sys
        import pytest  # as when pytest loads the plugin
        import trio_smtp.testing
        loaded = [m for m in {HEAVY!r} if m in sys.modules]
        assert not loaded, loaded
        """
    )
    assert result.returncode == 0, result.stderr


def test_a_pytest_run_that_uses_no_fixture_imports_no_server(tmp_path: object) -> None:
    # -p no:trio: pytest-trio itself imports Trio; the question is what *we* import.
    result = _run(
        f"""
        import sys
        import pytest

        class Check:
            def pytest_sessionfinish(self):
                loaded = [m for m in {HEAVY!r} if m in sys.modules]
                print("LOADED", loaded)

        code = pytest.main(
            ["-q", "-p", "no:trio", "-p", "no:cacheprovider", *{PLUGIN!r},
             "--collect-only", "--rootdir", {str(tmp_path)!r}, {str(tmp_path)!r}],
            plugins=[Check()],
        )
        """
    )
    assert "LOADED []" in result.stdout, result.stdout + result.stderr


def test_the_helpers_are_there_when_asked_for() -> None:
    result = _run(
        """
        import sys
        import trio_smtp.testing as testing
        assert "pytest" not in sys.modules  # a plain program does not pay for pytest
        assert "trio" not in sys.modules
        assert testing.ThreadedServer.__name__ == "ThreadedServer"
        assert "trio" in sys.modules
        assert {"SMTPClient", "serving", "RecordingLogger"} <= set(testing.__all__)
        """
    )
    assert result.returncode == 0, result.stderr


def _pytest_in(tmp_path: Path, test: str, *args: str) -> str:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_user.py").write_text(textwrap.dedent(test))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            *args,
            *PLUGIN,
            "-c",
            str(tmp_path / "pytest.ini"),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    return result.stdout + result.stderr


def test_a_trio_fixture_in_an_unmarked_test_says_what_to_do(tmp_path: Path) -> None:
    out = _pytest_in(
        tmp_path,
        """
        async def test_unmarked(smtp_server):
            pass

        def test_sync(smtp_server_factory):
            pass
        """,
    )
    # Each error is reported in its section and, under -ra, again in the short summary.
    assert "2 errors" in out, out
    for fixture in ("smtp_server", "smtp_server_factory"):
        assert (
            f"{fixture} runs in the test's Trio event loop: make the test `async def` and "
            "mark it @pytest.mark.trio, or set trio_mode = true" in out
        ), out


def test_a_trio_fixture_without_pytest_trio_says_what_to_install(tmp_path: Path) -> None:
    out = _pytest_in(
        tmp_path,
        """
        def test_sync(smtp_server):
            pass
        """,
        "-p",
        "no:trio",
    )
    assert 'needs pytest-trio: pip install "trio_smtp[testing]"' in out, out


def test_a_marked_trio_test_gets_the_fixture(tmp_path: Path) -> None:
    out = _pytest_in(
        tmp_path,
        """
        import pytest

        @pytest.mark.trio
        async def test_marked(smtp_server):
            assert smtp_server.port > 0
        """,
    )
    assert "1 passed" in out, out
