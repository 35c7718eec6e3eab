"""Shared fixtures: trustme certificates and helpers for external tools."""

from __future__ import annotations

import os
import shutil
import ssl
from pathlib import Path

import pytest
import trustme
from hypothesis import HealthCheck, settings

# No test asserts wall-clock time, Hypothesis' included: no deadline per example, and no
# health check for slow data generation (both fail on a loaded machine, not on a bug).
settings.register_profile("loaded", deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Under CI the property tests also replay the same examples every run, so that a landing
# is never decided by a lucky draw; locally they explore new examples each time.
settings.register_profile("ci", parent=settings.get_profile("loaded"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "loaded")


def require_tool(name: str) -> str:
    """The path of an external program; under CI a missing one fails the test."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI but is not installed")
        pytest.skip(f"{name} is not installed")
    return path


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_cert(tls_ca: trustme.CA) -> trustme.LeafCert:
    return tls_ca.issue_cert("localhost", "127.0.0.1", "::1", "mx.example.test")


@pytest.fixture(scope="session")
def tls_files(
    tls_ca: trustme.CA, tls_cert: trustme.LeafCert, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert = d / "cert.pem"
    key = d / "key.pem"
    ca = d / "ca.pem"
    tls_cert.private_key_pem.write_to_path(str(key))
    tls_cert.cert_chain_pems[0].write_to_path(str(cert))
    for pem in tls_cert.cert_chain_pems[1:]:
        with open(cert, "ab") as f:
            f.write(pem.bytes())
    tls_ca.cert_pem.write_to_path(str(ca))
    return {"cert": cert, "key": key, "ca": ca}


@pytest.fixture(scope="session")
def client_ssl_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    tls_ca.configure_trust(ctx)
    return ctx


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.needs_tool("swaks")`` is ``require_tool("swaks")`` before the test."""
    for marker in item.iter_markers(name="needs_tool"):
        for name in marker.args:
            require_tool(name)
