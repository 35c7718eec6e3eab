"""The pytest plugin is loaded by every pytest run where trio_smtp is installed: it must
not import Trio or the server until a fixture or helper is used."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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
            ["-q", "-p", "no:trio", "-p", "no:cacheprovider", "-p", "trio_smtp.testing",
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
