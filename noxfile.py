"""Sessions: ``nox`` runs tests, lint, typing and docs; bench, certs and fuzz run on demand."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typing", "docs"]
nox.options.reuse_existing_virtualenvs = True

TEST_DEPS = ["pytest>=8", "pytest-trio>=0.8", "trustme>=1.1", "hypothesis>=6", "aiosmtpd==1.4.6"]
# tests/verify: the verify extra, and pyyaml to read the RFC 7208 suite file.
VERIFY_DEPS = ["pyyaml"]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (pass pytest arguments after ``--``)."""
    session.install("-e", ".[verify,metrics]", *TEST_DEPS, *VERIFY_DEPS)
    args = session.posargs or ["-W", "error", "-p", "no:cacheprovider"]
    # pytest exits 5 when it collects nothing: that must fail, and nox fails on any non-zero.
    session.run("python", "-m", "pytest", *args)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict over the package, examples/, every Python block of README.md and tests/
    (the suite's own helpers are imported by file name)."""
    session.install(
        "-e", ".[verify,testing,metrics]", *TEST_DEPS, *VERIFY_DEPS, "mypy", "types-PyYAML"
    )
    session.run("mypy", "--strict", "trio_smtp", "examples")
    with tempfile.TemporaryDirectory() as blocks:
        for i, code in enumerate(readme_python_blocks()):
            Path(blocks, f"readme_block_{i:02d}.py").write_text(code, encoding="utf-8")
        session.run("mypy", "--strict", blocks)
    env = {"MYPYPATH": os.pathsep.join(["tests", "tests/server", "tests/abuse"])}
    session.run("mypy", "--strict", "tests", env=env)


def readme_python_blocks() -> list[str]:
    """The Python code blocks of README.md (each one is run by tests/test_readme.py too)."""
    readme = Path(__file__).with_name("README.md").read_text(encoding="utf-8")
    return re.findall(r"<!-- test: [^>]+ -->\n```python\n(.*?)```", readme, re.S)


@nox.session
def docs(session: nox.Session) -> None:
    """The API reference in docs/, built with Sphinx from the docstrings; a warning fails."""
    session.install("-e", ".[testing]", "sphinx")
    session.run(
        "sphinx-build", "-W", "--keep-going", "-q", "-b", "html", "docs", "docs/_build/html"
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: the engine alone, then the server against aiosmtpd side by side."""
    session.install("-e", ".", "aiosmtpd==1.4.6", "trustme")
    session.run("python", "bench/engine_bench.py")
    session.run("python", "bench/server_bench.py", *session.posargs)
    session.run("python", "bench/memory_bench.py")
    session.run("python", "bench/workers_bench.py")


@nox.session
def certs(session: nox.Session) -> None:
    """Regenerate the self-signed certificate in certs/."""
    session.install("-e", ".", "cryptography")
    session.run("python", "-m", "trio_smtp.certs", "--dir", "certs")


@nox.session
def fuzz(session: nox.Session) -> None:
    """Fuzz the engine with atheris for a bounded time (pass libFuzzer flags after --)."""
    session.install("-e", ".", "atheris")
    session.run("python", "fuzz/fuzz_engine.py", *(session.posargs or ["-max_total_time=60"]))


@nox.session
def spf_suite(session: nox.Session) -> None:
    """The RFC 7208 SPF test suite (from pyspf's sdist, fetched, never committed) against ours."""
    session.install("-e", ".[verify]", *TEST_DEPS, *VERIFY_DEPS)
    tmp = session.create_tmp()
    session.run(
        "python", "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
        "pyspf==2.0.14", "-d", tmp,
    )  # fmt: skip
    suite = session.run(
        "python", "-c", "import sys; from tests.verify.spf_suite import extract; "
        "from pathlib import Path; print(extract(Path(sys.argv[1])))", tmp,
        silent=True,
    )  # fmt: skip
    assert isinstance(suite, str)
    session.run(
        "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/verify/test_spf_suite.py",
        env={"SPF_TEST_SUITE": suite.strip()},
    )  # fmt: skip
