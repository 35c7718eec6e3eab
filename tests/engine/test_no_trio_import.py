"""The engine is usable alone: importing it pulls in no Trio, no sockets, no TLS, no event loop.

Each check runs in a fresh interpreter, since this test process has Trio loaded already.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_importing_the_engine_does_not_import_trio() -> None:
    result = run_python(
        """
        import sys
        import trio_smtp.engine
        assert "trio" not in sys.modules, sorted(m for m in sys.modules if "trio" in m)
        """
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("module", ["socket", "ssl", "asyncio", "selectors"])
def test_importing_the_engine_does_no_io_imports(module: str) -> None:
    result = run_python(
        f"""
        import sys
        import trio_smtp.engine
        assert {module!r} not in sys.modules
        """
    )
    assert result.returncode == 0, result.stderr


def test_engine_runs_a_session_where_trio_cannot_be_imported() -> None:
    # A meta-path hook makes "import trio" fail, as on a machine without Trio.
    result = run_python(
        """
        import sys

        class NoTrio:
            def find_spec(self, name, path=None, target=None):
                if name == "trio" or name.startswith("trio."):
                    raise ImportError(f"no module named {name!r} (blocked)")
                return None

        sys.meta_path.insert(0, NoTrio())
        from trio_smtp.engine import NEED_DATA, Engine, EndOfMessage

        engine = Engine()
        engine.greet()
        engine.receive_data(
            b"EHLO c\\r\\nMAIL FROM:<a@b>\\r\\nRCPT TO:<c@d>\\r\\n"
            b"DATA\\r\\nhi\\r\\n.\\r\\nQUIT\\r\\n"
        )
        ends = 0
        while (event := engine.next_event()) is not NEED_DATA:
            ends += isinstance(event, EndOfMessage)
            if event.needs_reply:
                engine.respond()
            if type(event).__name__ == "ConnectionClosed":
                break
        assert ends == 1
        out = engine.data_to_send()
        assert out.endswith(
            b"250 2.0.0 OK message accepted\\r\\n"
            b"221 2.0.0 localhost closing connection\\r\\n"
        ), out
        """
    )
    assert result.returncode == 0, result.stderr


def test_the_package_top_level_imports_trio_lazily() -> None:
    result = run_python(
        """
        import sys
        import trio_smtp
        assert "trio" not in sys.modules
        assert trio_smtp.Reply(250, "ok").code == 250
        """
    )
    assert result.returncode == 0, result.stderr


def test_importing_the_plugin_compiles_no_general_address_pattern() -> None:
    # The SMTPUTF8 patterns span all of Unicode and took a fifth of a second to compile at
    # import, paid by every pytest run that loads the plugin; they compile on first use.
    result = run_python(
        """
        import trio_smtp.testing
        from trio_smtp.engine import _grammar
        from trio_smtp.engine._grammar import parse_params, parse_path

        lazy = (_grammar._path_pattern, _grammar._value_utf8)
        assert [f.cache_info().currsize for f in lazy] == [0, 0]
        assert parse_path("<a@b> X=1", utf8=True, allow_null=True, allow_postmaster=False,
                          sender=True) == ("a@b", " X=1")
        assert parse_params(" X=\\u00e9", utf8=True) == {"X": "\\u00e9"}
        assert [f.cache_info().currsize for f in lazy] == [1, 1]
        """
    )
    assert result.returncode == 0, result.stderr
