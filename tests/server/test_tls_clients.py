"""Real TLS clients against the server: swaks, ``openssl s_client`` and curl.

Each client runs as a subprocess (``trio.run_process``) against a server in the
test's own Trio run, verifying the server's trustme certificate with the test CA.
Missing programs skip the test, or fail it under ``CI=true`` (``require_tool``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from conftest import require_tool
from test_starttls import LineLogger, running

from trio_smtp._auth_file import hash_password

PROCESS_TIMEOUT = 30.0
PASSWORD = "Sw4ks-and-curl pw"
BODY_MARKER = "tls-clients-marker-7f3a"


def require_swaks() -> str:
    swaks = require_tool("swaks")
    # swaks speaks TLS through Net::SSLeay (Debian: libnet-ssleay-perl).
    perl = require_tool("perl")
    if subprocess.run([perl, "-MNet::SSLeay", "-e1"], capture_output=True).returncode != 0:
        require_tool("Net::SSLeay (perl module for swaks --tls)")
    return swaks


@pytest.fixture
def auth_file(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    path.write_text(
        f"alice:{PASSWORD}\nbob:{hash_password(PASSWORD, iterations=1000)}\n", encoding="utf-8"
    )
    return path


async def run(argv: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(PROCESS_TIMEOUT):
        return await trio.run_process(
            argv, stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
        )


def output(done: subprocess.CompletedProcess[bytes]) -> str:
    return (done.stdout + done.stderr).decode("utf-8", "replace")


def assert_no_password(logger: LineLogger) -> None:
    assert PASSWORD not in logger.text


# ---------------------------------------------------------------------------- swaks


def swaks_argv(swaks: str, port: int, ca: Path, *extra: str) -> list[str]:
    return [
        swaks,
        "--server", "127.0.0.1",
        "--port", str(port),
        "--helo", "swaks.test",
        "--from", "a@client.test",
        "--to", "b@mx.test",
        "--header", "Subject: from swaks",
        "--body", BODY_MARKER,
        "--tls-verify",
        "--tls-ca-path", str(ca),
        "--timeout", "10",
        *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize(("flag", "implicit"), [("--tls", False), ("--tlsc", True)])
async def test_swaks_with_tls_and_auth(
    tls_files: dict[str, Path], auth_file: Path, mechanism: str, flag: str, implicit: bool
) -> None:
    swaks = require_swaks()
    async with running(tls_files, tls_port=0, auth_file=str(auth_file)) as srv:
        port = srv.server.addresses[1 if implicit else 0][1]
        user = "alice" if mechanism == "PLAIN" else "bob"
        done = await run(
            swaks_argv(
                swaks, port, tls_files["ca"], flag,
                "--auth", mechanism, "--auth-user", user, "--auth-password", PASSWORD,
            )
        )  # fmt: skip
    text = output(done)
    assert done.returncode == 0, text
    assert "235 2.7.0 authentication successful" in text
    # swaks shows the EHLO after TLS: AUTH offered, STARTTLS no longer.
    assert "250-AUTH PLAIN LOGIN" in text or "250 AUTH PLAIN LOGIN" in text
    [mail] = srv.sink.messages
    assert BODY_MARKER.encode() in mail.content
    assert mail.session.tls is not None
    assert mail.session.tls.implicit is implicit
    assert mail.session.tls.version in ("TLSv1.2", "TLSv1.3")
    assert mail.session.authenticated_as == user
    assert mail.session.auth_mechanism == mechanism
    assert mail.session.helo_name == "swaks.test"
    assert_no_password(srv.logger)


async def test_swaks_with_a_wrong_password_fails_auth(
    tls_files: dict[str, Path], auth_file: Path
) -> None:
    swaks = require_swaks()
    async with running(tls_files, auth_file=str(auth_file)) as srv:
        done = await run(
            swaks_argv(
                swaks, srv.port, tls_files["ca"], "--tls",
                "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "wrong",
            )
        )  # fmt: skip
    assert done.returncode == 28, output(done)  # 28: error in AUTH transaction
    assert "535 5.7.8" in output(done)
    assert srv.sink.messages == []


async def test_swaks_tls_verify_fails_against_an_untrusted_ca(
    tls_files: dict[str, Path], tmp_path: Path
) -> None:
    swaks = require_swaks()
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    async with running(tls_files) as srv:
        done = await run(swaks_argv(swaks, srv.port, other_ca, "--tls"))
        assert "TLS handshake failed" in srv.logger.text
    assert done.returncode == 29, output(done)  # 29: error in TLS transaction
    assert srv.sink.messages == []


# ---------------------------------------------------------------------------- openssl


async def test_openssl_s_client_starttls_smtp(tls_files: dict[str, Path]) -> None:
    openssl = require_tool("openssl")
    session = (
        "EHLO openssl.test\n"
        "MAIL FROM:<a@client.test>\n"
        "RCPT TO:<b@mx.test>\n"
        "DATA\n"
        "Subject: from openssl\n"
        "\n"
        f"{BODY_MARKER}\n"
        ".\n"
        "QUIT\n"
    )
    async with running(tls_files) as srv:
        done = await run(
            [
                openssl, "s_client",
                "-starttls", "smtp",
                "-connect", f"127.0.0.1:{srv.port}",
                "-CAfile", str(tls_files["ca"]),
                "-verify_return_error",
                "-verify_ip", "127.0.0.1",
                "-crlf",
                "-quiet",
            ],
            stdin=session.encode(),
        )  # fmt: skip
    assert done.returncode == 0, output(done)
    # stdout holds what came back after the handshake: the replies to the EHLO, MAIL,
    # RCPT, DATA, dot and QUIT piped in (openssl's own pre-TLS EHLO goes to stderr).
    text = done.stdout.decode()
    assert text.startswith("250-mx.test\r\n")
    assert "STARTTLS" not in text
    assert "250 2.1.0 sender OK" in text
    assert "250 2.1.5 recipient OK" in text
    assert "354 end data with <CR><LF>.<CR><LF>" in text
    assert "250 2.0.0 OK queued as" in text
    assert "221 2.0.0 mx.test closing connection" in text
    [mail] = srv.sink.messages
    assert f"{BODY_MARKER}\r\n".encode() in mail.content
    assert mail.message["Subject"] == "from openssl"
    assert mail.session.tls is not None
    assert mail.session.helo_name == "openssl.test"


async def test_openssl_s_client_sni(tls_files: dict[str, Path]) -> None:
    openssl = require_tool("openssl")
    async with running(tls_files) as srv:
        done = await run(
            [
                openssl, "s_client",
                "-starttls", "smtp",
                "-connect", f"127.0.0.1:{srv.port}",
                "-servername", "mx.example.test",
                "-CAfile", str(tls_files["ca"]),
                "-verify_return_error",
                "-verify_hostname", "mx.example.test",
                "-crlf",
                "-quiet",
            ],
            stdin=b"EHLO openssl.test\nQUIT\n",
        )  # fmt: skip
        assert "sni=mx.example.test" in srv.logger.text
    assert done.returncode == 0, output(done)
    assert "221 2.0.0" in output(done)


# ---------------------------------------------------------------------------- curl


def curl_argv(curl: str, url: str, ca: Path, message: Path, *extra: str) -> list[str]:
    return [
        curl,
        "--silent", "--show-error",
        "--max-time", "20",
        url,
        "--mail-from", "a@client.test",
        "--mail-rcpt", "b@mx.test",
        "--upload-file", str(message),
        "--cacert", str(ca),
        *extra,
    ]  # fmt: skip


@pytest.fixture
def message_file(tmp_path: Path) -> Path:
    path = tmp_path / "message.txt"
    path.write_bytes(f"Subject: from curl\r\n\r\n{BODY_MARKER}\r\n".encode())
    return path


@pytest.mark.parametrize(
    ("scheme", "user"),
    [("smtp", None), ("smtp", "alice"), ("smtps", "bob")],
    ids=["starttls", "starttls-auth", "smtps-auth"],
)
async def test_curl_sends_over_tls(
    tls_files: dict[str, Path],
    auth_file: Path,
    message_file: Path,
    scheme: str,
    user: str | None,
) -> None:
    curl = require_tool("curl")
    async with running(tls_files, tls_port=0, auth_file=str(auth_file)) as srv:
        port = srv.server.addresses[1 if scheme == "smtps" else 0][1]
        extra: list[str] = [] if scheme == "smtps" else ["--ssl-reqd"]
        if user is not None:
            extra += ["--user", f"{user}:{PASSWORD}"]
        done = await run(
            curl_argv(curl, f"{scheme}://127.0.0.1:{port}", tls_files["ca"], message_file, *extra)
        )
    assert done.returncode == 0, output(done)
    [mail] = srv.sink.messages
    assert mail.content.endswith(f"{BODY_MARKER}\r\n".encode())
    assert mail.rcpt_tos == ["b@mx.test"]
    assert mail.session.tls is not None
    assert mail.session.tls.implicit is (scheme == "smtps")
    assert mail.session.authenticated_as == user
    assert_no_password(srv.logger)


async def test_curl_ssl_reqd_refuses_a_server_without_starttls(
    tls_files: dict[str, Path], message_file: Path
) -> None:
    curl = require_tool("curl")
    calls: list[Any] = []
    async with running(None, events={"MAIL": calls.append}) as srv:
        done = await run(
            curl_argv(
                curl, f"smtp://127.0.0.1:{srv.port}", tls_files["ca"], message_file, "--ssl-reqd"
            )
        )
    # 64: "requested SSL level failed"; nothing was sent in the clear.
    assert done.returncode == 64, output(done)
    assert calls == []
    assert srv.sink.messages == []
