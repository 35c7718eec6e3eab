"""Without the ``verify`` extra: ``import trio_smtp`` works, and asking for verify says why not."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# A finder that makes the extra's packages unimportable, as on a machine without them.
PROGRAM = textwrap.dedent(
    """
    import sys

    class Missing:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("dns", "dkim", "authres", "publicsuffixlist", "nacl"):
                raise ImportError(name)

    sys.meta_path.insert(0, Missing())
    import trio_smtp
    import trio_smtp.sinks.maildir, trio_smtp.sinks.mbox, trio_smtp.sinks.relay
    from trio_smtp import Server
    Server({"config": {"port": 0}})
    try:
        Server({"config": {"verify": "spf,dkim"}})
    except ValueError as exc:
        print("ERROR", exc)
    """
)


def test_server_without_the_extra_imports_and_refuses_verify_clearly() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "ERROR verify needs dns, dkim, authres, publicsuffixlist" in done.stdout
    assert "trio_smtp[verify]" in done.stdout
