"""The RFC 7208 SPF test suite (openspf.org, release 2014.04) as shipped in pyspf's sdist.

The file is never copied into this repository: ``SPF_TEST_SUITE`` names it (``nox -s
spf_suite`` and ``nox -s tests`` fetch it), or it is fetched here with ``pip download
--no-binary :all: --no-deps pyspf`` (pip's cache makes that cheap after the first time).

Each scenario's ``zonedata`` becomes a :class:`ZoneResolver`, an implementation of the same
``Resolver`` interface the server's verifier uses, with the suite driver's conventions:
records of type SPF stand for TXT when a name has no TXT, ``TIMEOUT`` makes every query of
that name fail, a name starting ``error.`` that is not in the zone fails, CNAMEs are followed.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from trio_smtp.verify._dns import DnsTempError

PYSPF: str = "pyspf==2.0.14"
MEMBER: str = "test/rfc7208-tests.yml"


@functools.cache
def suite_file() -> Path | str:
    """The path of rfc7208-tests.yml, or a string saying why it could not be had."""
    env = os.environ.get("SPF_TEST_SUITE")
    if env:
        return Path(env)
    target = Path(tempfile.mkdtemp(prefix="spf-suite-"))
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:",
             "--no-deps", PYSPF, "-d", str(target)],
            check=True, capture_output=True, timeout=180,
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        tail = exc.stderr.decode(errors="replace").strip().splitlines()[-1:]
        return f"could not fetch {PYSPF} with pip download: {tail}"
    except (subprocess.SubprocessError, OSError) as exc:
        return f"could not fetch {PYSPF} with pip download: {exc}"
    return extract(target)


def extract(directory: Path) -> Path | str:
    for archive in directory.glob("pyspf-*.tar.gz"):
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if member.name.endswith(MEMBER):
                    source = tar.extractfile(member)
                    assert source is not None
                    out = directory / "rfc7208-tests.yml"
                    out.write_bytes(source.read())
                    return out
    return f"no {MEMBER} in the pyspf source distribution in {directory}"


def load(path: Path) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Every test as ``(id, test, zonedata)``."""
    import yaml

    cases = []
    with path.open("rb") as f:
        for scenario in yaml.safe_load_all(f):
            zone = scenario.get("zonedata") or {}
            for name, test in scenario["tests"].items():
                cases.append((name, test, zone))
    return cases


class ZoneResolver:
    """Answers from one scenario's zonedata, as the suite's reference driver does."""

    def __init__(self, zonedata: dict[str, list[Any]]) -> None:
        self._zone = {name.lower().rstrip("."): records for name, records in zonedata.items()}

    async def query(self, name: str, rdtype: str) -> tuple[str, ...]:
        return self._lookup(name, rdtype, depth=0)

    def _lookup(self, name: str, rdtype: str, depth: int) -> tuple[str, ...]:
        labels = name.removesuffix(".").split(".")
        if any(not 0 < len(label) <= 63 for label in labels):
            return ()  # no such name can be asked (dnspython refuses to build it)
        key = ".".join(labels).lower()
        records = self._zone.get(key)
        if records is None:
            if key.startswith("error."):
                raise DnsTempError(f"{rdtype} {name}: timeout")
            return ()
        has_txt = any(isinstance(r, dict) and "TXT" in r for r in records)
        out: list[str] = []
        for record in records:
            if record == "TIMEOUT":
                # The reference driver times out unless an answer of the type came first.
                if out:
                    break
                raise DnsTempError(f"{rdtype} {name}: timeout")
            ((kind, value),) = record.items()
            if kind == "SPF" and not has_txt:
                kind = "TXT"
            if value == "TIMEOUT" and kind == rdtype:
                raise DnsTempError(f"{rdtype} {name}: timeout")
            if kind == "CNAME" and rdtype != "CNAME" and depth < 8:
                out.extend(self._lookup(value, rdtype, depth + 1))
                continue
            if kind != rdtype or value == "NONE":
                continue
            if kind == "TXT":
                out.append("".join([value] if isinstance(value, str) else value))
            elif kind == "MX":
                out.append(f"{value[0]} {value[1]}")
            else:
                out.append(str(value))
        return tuple(out)
