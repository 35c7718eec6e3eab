"""Every scenario of the RFC 7208 test suite against our SPF evaluation (see spf_suite.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trio_smtp.verify._spf import check_sender

from .spf_suite import ZoneResolver, load, suite_file


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "spf_case" not in metafunc.fixturenames:
        return
    found = suite_file()
    if isinstance(found, str):
        metafunc.parametrize("spf_case", [pytest.param(None, id="unavailable")])
        return
    cases = load(found)
    metafunc.parametrize("spf_case", cases, ids=[name for name, _test, _zone in cases])


async def test_rfc7208_scenario(
    spf_case: tuple[str, dict[str, Any], dict[str, Any]] | None,
) -> None:
    if spf_case is None:
        found = suite_file()
        assert isinstance(found, str)
        pytest.skip(found)
    _name, test, zone = spf_case
    outcome = await check_sender(
        ZoneResolver(zone),
        test["host"],
        test["mailfrom"],
        test["helo"],
        default_explanation="DEFAULT",
    )
    expected = test["result"]
    allowed = [expected] if isinstance(expected, str) else list(expected)
    assert outcome.result in allowed, (outcome, test.get("description"))
    if "explanation" in test:
        assert outcome.explanation == test["explanation"], outcome


def test_suite_file_is_not_in_the_repository() -> None:
    root = Path(__file__).resolve().parents[2]
    # nox's own temporary directory (.nox/) is where the session fetches it to.
    committed = [p for p in root.glob("**/rfc7208-tests.yml") if ".nox" not in p.parts]
    assert not committed
