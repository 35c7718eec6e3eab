"""AUTH PLAIN and LOGIN (RFC 4954) end to end: auth files, the AUTH hook, refusals.

smtplib's ``login()`` and ``auth()`` drive the good paths; a raw Trio client sends the
malformed and out-of-order ones byte for byte. The helpers are shared with
``test_starttls.py``.
"""

from __future__ import annotations

import base64
import functools
import smtplib
import ssl
from pathlib import Path
from typing import Any

import pytest
from test_starttls import MESSAGE, RawClient, Running, in_thread, smtplib_client
from test_starttls import running as _running

from trio_smtp import Reply
from trio_smtp._auth_file import hash_password


def running(tls_files: dict[str, Path] | None, **kwargs: Any) -> Any:
    """The shared test server, without the delay after a failed AUTH.

    The delay (and the per-address budget) are pinned in
    ``tests/hardening/test_auth_guard.py`` and ``test_auth_guessing.py``; here they
    would only slow the tests that fail on purpose.
    """
    kwargs.setdefault("auth_failure_delay", 0)
    return _running(tls_files, **kwargs)


PASSWORD = "S3cret-Pa55word"
HASHED_PASSWORD = "An0ther-s3cret"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def plain(login: str, password: str, authzid: str = "") -> str:
    return b64(f"{authzid}\0{login}\0{password}")


def secrets_in(text: str) -> list[str]:
    """Every form of the test passwords that must never show up in ``text``."""
    found = []
    for password in (PASSWORD, HASHED_PASSWORD, "wrong-" + PASSWORD):
        forms = [password, b64(password), plain("alice", password), plain("bob", password)]
        found += [form for form in forms if form in text]
    return found


@pytest.fixture
def auth_file(tmp_path: Path) -> Path:
    """alice has a plain password, bob a PBKDF2 hash (few rounds, for speed)."""
    path = tmp_path / "users"
    path.write_text(
        "# test users\n"
        f"alice:{PASSWORD}\n"
        "\n"
        f"bob:{hash_password(HASHED_PASSWORD, iterations=1000)}\n",
        encoding="utf-8",
    )
    return path


async def tls_client(srv: Running, context: ssl.SSLContext) -> RawClient:
    """A raw client, greeted, through STARTTLS and EHLO."""
    client = await srv.connect()
    await client.reply()
    await client.command("EHLO client.test")
    await client.command("STARTTLS")
    await client.starttls(context)
    code, _ = await client.command("EHLO client.test")
    assert code == 250
    return client


def login_over_starttls(
    port: int, context: ssl.SSLContext, user: str, password: str, mechanism: str | None = None
) -> tuple[int, bytes]:
    """Log in with smtplib (``login()``, or ``auth()`` for one mechanism) and send a message."""
    with smtplib_client(port) as smtp:
        smtp.starttls(context=context)
        smtp.ehlo()
        if mechanism is None:
            reply = smtp.login(user, password)
        else:
            smtp.user, smtp.password = user, password
            method = smtp.auth_plain if mechanism == "PLAIN" else smtp.auth_login
            # Without an initial response the server must send its 334 challenges.
            reply = smtp.auth(mechanism, method, initial_response_ok=False)
        smtp.sendmail("a@client.test", ["b@mx.test"], MESSAGE)
        return reply


# ---------------------------------------------------------------------------- auth file


@pytest.mark.parametrize("mechanism", [None, "PLAIN", "LOGIN"], ids=["login()", "PLAIN", "LOGIN"])
@pytest.mark.parametrize(
    ("user", "password"), [("alice", PASSWORD), ("bob", HASHED_PASSWORD)], ids=["plain", "pbkdf2"]
)
async def test_auth_file_logins_with_smtplib(
    tls_files: dict[str, Path],
    client_ssl_context: ssl.SSLContext,
    auth_file: Path,
    mechanism: str | None,
    user: str,
    password: str,
) -> None:
    seen: list[tuple[str | None, str | None]] = []

    def on_mail(ctx: Any) -> None:
        seen.append((ctx.session.authenticated_as, ctx.session.auth_mechanism))

    async with running(tls_files, auth_file=str(auth_file), events={"MAIL": on_mail}) as srv:
        reply = await in_thread(
            lambda: login_over_starttls(srv.port, client_ssl_context, user, password, mechanism)
        )
    assert reply == (235, b"2.7.0 authentication successful")
    used = mechanism or "PLAIN"  # login() prefers PLAIN of what is offered
    assert seen == [(user, used)]
    [mail] = srv.sink.messages
    assert mail.session.authenticated_as == user
    assert mail.session.auth_mechanism == used
    assert mail.session.protocol == "ESMTPSA"
    assert f"Authenticated: id={mail.session.id} as {user!r} ({used})" in srv.logger.text
    assert secrets_in(srv.logger.text) == []


@pytest.mark.parametrize(
    ("user", "password"),
    [("alice", "wrong-" + PASSWORD), ("bob", PASSWORD), ("mallory", PASSWORD), ("alice", "")],
    ids=["wrong-password", "other-users-password", "unknown-user", "empty-password"],
)
async def test_auth_file_refuses_bad_credentials(
    tls_files: dict[str, Path],
    client_ssl_context: ssl.SSLContext,
    auth_file: Path,
    user: str,
    password: str,
) -> None:
    async with running(tls_files, auth_file=str(auth_file)) as srv:
        client = await tls_client(srv, client_ssl_context)
        code, text = await client.command(f"AUTH PLAIN {plain(user, password)}")
        assert (code, text) == (535, "5.7.8 authentication credentials invalid")
        # Still unauthenticated, still connected: AUTH may be tried again.
        assert (await client.command(f"AUTH PLAIN {plain('alice', PASSWORD)}"))[0] == 235
        await client.aclose()
    assert "Authentication failed" in srv.logger.text
    assert secrets_in(srv.logger.text) == []


async def test_an_authzid_other_than_the_login_is_refused(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext, auth_file: Path
) -> None:
    """RFC 4616 §2: alice may not act as bob, even with her right password."""
    seen: list[str | None] = []
    events = {"MAIL": lambda ctx: seen.append(ctx.session.authenticated_as)}
    async with running(tls_files, auth_file=str(auth_file), events=events) as srv:
        client = await tls_client(srv, client_ssl_context)
        response = plain("alice", PASSWORD, authzid="bob")
        assert await client.command(f"AUTH PLAIN {response}") == (
            535,
            "5.7.8 authorization identity not permitted",
        )
        same = plain("alice", PASSWORD, authzid="alice")
        assert (await client.command(f"AUTH PLAIN {same}"))[0] == 235
        await client.command("MAIL FROM:<a@client.test>")
        await client.aclose()
    assert seen == ["alice"]


# ---------------------------------------------------------------------------- the AUTH hook


async def test_auth_hook_gets_mechanism_login_and_password(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    calls: list[tuple[str | None, str | None, str | None, str]] = []
    contexts: list[Any] = []

    def on_auth(ctx: Any) -> bool:
        calls.append((ctx.mechanism, ctx.login, ctx.password, ctx.argument))
        contexts.append(ctx)
        return bool(ctx.login == "carol" and ctx.password == PASSWORD)

    async with running(tls_files, events={"AUTH": on_auth}) as srv:
        for mechanism in ("PLAIN", "LOGIN"):
            reply = await in_thread(
                functools.partial(
                    login_over_starttls, srv.port, client_ssl_context, "carol", PASSWORD, mechanism
                )
            )
            assert reply[0] == 235
    assert calls == [
        ("PLAIN", "carol", PASSWORD, "PLAIN"),
        ("LOGIN", "carol", PASSWORD, "LOGIN"),
    ]
    for ctx in contexts:
        assert PASSWORD not in repr(ctx)
        assert "password" not in repr(ctx)
        assert PASSWORD not in repr(ctx.session)
    for mail in srv.sink.messages:
        assert PASSWORD not in repr(mail)
    assert secrets_in(srv.logger.text) == []


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (True, (235, "2.7.0 authentication successful")),
        (False, (535, "5.7.8 authentication credentials invalid")),
        (Reply(454, "4.7.0 try later"), (454, "4.7.0 try later")),
        (Reply(235, "2.7.0 welcome, carol"), (235, "2.7.0 welcome, carol")),
    ],
    ids=["true", "false", "reply-454", "reply-235"],
)
async def test_auth_hook_answers(
    tls_files: dict[str, Path],
    client_ssl_context: ssl.SSLContext,
    answer: bool | Reply,
    expected: tuple[int, str],
) -> None:
    seen: list[str | None] = []
    events = {
        "AUTH": lambda ctx: answer,
        "MAIL": lambda ctx: seen.append(ctx.session.authenticated_as),
    }
    async with running(tls_files, events=events) as srv:
        client = await tls_client(srv, client_ssl_context)
        assert await client.command(f"AUTH PLAIN {plain('carol', PASSWORD)}") == expected
        assert (await client.command("MAIL FROM:<a@client.test>"))[0] == 250
        await client.aclose()
    assert seen == (["carol"] if expected[0] == 235 else [None])


async def test_auth_hook_raising_a_reply(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    def on_auth(ctx: Any) -> None:
        raise Reply(535, "5.7.8 go away")

    async with running(tls_files, events={"AUTH": on_auth}) as srv:
        client = await tls_client(srv, client_ssl_context)
        assert await client.command(f"AUTH PLAIN {plain('carol', PASSWORD)}") == (
            535,
            "5.7.8 go away",
        )
        await client.aclose()


async def test_auth_hook_that_fails_gets_451_and_an_error_event(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    errors: list[BaseException] = []

    def on_auth(ctx: Any) -> bool:
        raise RuntimeError("directory is down")

    events = {"AUTH": on_auth, "error": lambda error, mail: errors.append(error)}
    async with running(tls_files, events=events) as srv:
        client = await tls_client(srv, client_ssl_context)
        code, _ = await client.command(f"AUTH PLAIN {plain('carol', PASSWORD)}")
        assert code == 451
        assert (await client.command("NOOP"))[0] == 250
        await client.aclose()
    assert [str(e) for e in errors] == ["directory is down"]
    assert secrets_in(srv.logger.text) == []


async def test_auth_hook_returning_none_falls_back_to_the_auth_file(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext, auth_file: Path
) -> None:
    def on_auth(ctx: Any) -> bool | None:
        # Decides for carol; leaves everyone else to the auth file.
        return True if ctx.login == "carol" else None

    async with running(tls_files, auth_file=str(auth_file), events={"AUTH": on_auth}) as srv:
        client = await tls_client(srv, client_ssl_context)
        assert (await client.command(f"AUTH PLAIN {plain('carol', 'anything')}"))[0] == 235
        await client.aclose()
        client = await tls_client(srv, client_ssl_context)
        assert (await client.command(f"AUTH PLAIN {plain('alice', 'wrong')}"))[0] == 535
        assert (await client.command(f"AUTH PLAIN {plain('alice', PASSWORD)}"))[0] == 235
        await client.aclose()


async def test_authenticator_dependency_is_used(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    calls: list[tuple[str, str, str]] = []

    def authenticator(mechanism: str, login: str, password: str) -> bool:
        calls.append((mechanism, login, password))
        return password == PASSWORD

    async with running(tls_files, deps={"authenticator": authenticator}) as srv:
        reply = await in_thread(
            lambda: login_over_starttls(srv.port, client_ssl_context, "dave", PASSWORD, "LOGIN")
        )
    assert reply[0] == 235
    assert calls == [("LOGIN", "dave", PASSWORD)]


# ---------------------------------------------------------------------------- the exchange


async def test_plain_without_initial_response_gets_an_empty_challenge(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext, auth_file: Path
) -> None:
    async with running(tls_files, auth_file=str(auth_file)) as srv:
        client = await tls_client(srv, client_ssl_context)
        assert await client.command("AUTH PLAIN") == (334, "")
        assert (await client.command(plain("alice", PASSWORD)))[0] == 235
        await client.aclose()


async def test_login_with_initial_response(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext, auth_file: Path
) -> None:
    async with running(tls_files, auth_file=str(auth_file)) as srv:
        client = await tls_client(srv, client_ssl_context)
        assert await client.command(f"AUTH LOGIN {b64('alice')}") == (334, b64("Password:"))
        assert (await client.command(b64(PASSWORD)))[0] == 235
        await client.aclose()


@pytest.mark.parametrize(
    "steps",
    [
        ["AUTH PLAIN", "*"],
        ["AUTH LOGIN", "*"],
        ["AUTH LOGIN", b64("alice"), "*"],
        ["AUTH login " + b64("alice"), "*"],
    ],
    ids=["plain", "login-at-username", "login-at-password", "login-initial"],
)
async def test_client_can_cancel_the_exchange(
    tls_files: dict[str, Path],
    client_ssl_context: ssl.SSLContext,
    auth_file: Path,
    steps: list[str],
) -> None:
    async with running(tls_files, auth_file=str(auth_file)) as srv:
        client = await tls_client(srv, client_ssl_context)
        for step in steps[:-1]:
            assert (await client.command(step))[0] == 334
        # RFC 4954 §4: "*" cancels, and the server answers 501.
        assert await client.command(steps[-1]) == (501, "5.7.0 authentication cancelled")
        # Back to commands, not authenticated, free to try again.
        assert (await client.command("NOOP"))[0] == 250
        assert (await client.command(f"AUTH PLAIN {plain('alice', PASSWORD)}"))[0] == 235
        await client.aclose()


@pytest.mark.parametrize(
    ("steps", "reply"),
    [
        (["AUTH PLAIN !!notbase64!!"], (501, "5.5.2 cannot decode the response as base64")),
        (["AUTH PLAIN", "QUJD=x"], (501, "5.5.2 cannot decode the response as base64")),
        (["AUTH LOGIN", "%%%"], (501, "5.5.2 cannot decode the response as base64")),
        (["AUTH LOGIN", b64("alice"), "abc"], (501, "5.5.2 cannot decode the response as base64")),
        ([f"AUTH PLAIN {b64('alice-no-nuls')}"], (501, "5.5.2 malformed PLAIN response")),
        (
            [f"AUTH PLAIN {b64(chr(0) + chr(0) + PASSWORD)}"],
            (501, "5.5.2 malformed PLAIN response"),
        ),
        (
            ["AUTH PLAIN " + base64.b64encode(b"\0al\xffce\0pw").decode()],
            (501, "5.5.2 credentials are not valid UTF-8"),
        ),
    ],
    ids=[
        "plain-initial",
        "plain-step",
        "login-user",
        "login-password",
        "plain-no-nul",
        "plain-empty-login",
        "plain-not-utf8",
    ],
)
async def test_malformed_responses_are_501_and_the_session_goes_on(
    tls_files: dict[str, Path],
    client_ssl_context: ssl.SSLContext,
    auth_file: Path,
    steps: list[str],
    reply: tuple[int, str],
) -> None:
    hook_calls: list[str | None] = []
    async with running(
        tls_files,
        auth_file=str(auth_file),
        events={"AUTH": lambda ctx: hook_calls.append(ctx.login)},
    ) as srv:
        client = await tls_client(srv, client_ssl_context)
        for step in steps[:-1]:
            assert (await client.command(step))[0] == 334
        assert await client.command(steps[-1]) == reply
        assert (await client.command(f"AUTH PLAIN {plain('alice', PASSWORD)}"))[0] == 235
        await client.aclose()
    # Only the well-formed attempt reached the hook.
    assert hook_calls == ["alice"]


async def test_unknown_mechanism_is_504(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext, auth_file: Path
) -> None:
    async with running(tls_files, auth_file=str(auth_file)) as srv:
        client = await tls_client(srv, client_ssl_context)
        assert await client.command("AUTH CRAM-MD5") == (
            504,
            "5.5.4 unrecognized authentication type",
        )
        await client.aclose()


# ---------------------------------------------------------------------------- sequence and policy


async def test_auth_before_tls_is_538_and_not_advertised(
    tls_files: dict[str, Path], auth_file: Path
) -> None:
    async with running(tls_files, auth_file=str(auth_file)) as srv:
        client = await srv.connect()
        await client.reply()
        _, ehlo = await client.command("EHLO client.test")
        assert not any(line.startswith("AUTH") for line in ehlo.split("\n"))
        assert "STARTTLS" in ehlo.split("\n")
        # RFC 4954 §6: the credentials would cross the network in the clear.
        assert await client.command(f"AUTH PLAIN {plain('alice', PASSWORD)}") == (
            538,
            "5.7.11 encryption required for requested authentication mechanism",
        )
        assert (await client.command("AUTH LOGIN"))[0] == 538
        await client.aclose()
    assert "Authenticated" not in srv.logger.text
    assert secrets_in(srv.logger.text) == []

    def smtplib_side() -> None:
        with smtplib_client(srv.port) as smtp, pytest.raises(smtplib.SMTPNotSupportedError):
            smtp.login("alice", PASSWORD)

    async with running(tls_files, auth_file=str(auth_file)) as srv:
        await in_thread(smtplib_side)


async def test_auth_insecure_allows_auth_on_the_plain_port(
    tls_files: dict[str, Path], auth_file: Path
) -> None:
    async with running(None, auth_file=str(auth_file), auth_insecure=True) as srv:

        def client() -> tuple[int, bytes]:
            with smtplib_client(srv.port) as smtp:
                smtp.ehlo()
                assert smtp.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
                reply = smtp.login("bob", HASHED_PASSWORD)
                smtp.sendmail("a@client.test", ["b@mx.test"], MESSAGE)
                return reply

        assert (await in_thread(client))[0] == 235
    [mail] = srv.sink.messages
    assert mail.session.tls is None
    assert mail.session.authenticated_as == "bob"
    assert mail.session.protocol == "ESMTPA"


async def test_starttls_forgets_an_earlier_auth(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext, auth_file: Path
) -> None:
    seen: list[str | None] = []
    async with running(
        tls_files,
        auth_file=str(auth_file),
        auth_insecure=True,
        events={"STARTTLS": lambda ctx: seen.append(ctx.session.authenticated_as)},
    ) as srv:
        client = await srv.connect()
        await client.reply()
        await client.command("EHLO client.test")
        assert (await client.command(f"AUTH PLAIN {plain('alice', PASSWORD)}"))[0] == 235
        await client.command("STARTTLS")
        await client.starttls(client_ssl_context)
        await client.command("EHLO client.test")
        # RFC 3207 §4.2: the AUTH from before TLS is forgotten too; AUTH is allowed again.
        assert (await client.command(f"AUTH PLAIN {plain('bob', HASHED_PASSWORD)}"))[0] == 235
        await client.aclose()
    assert seen == [None]


async def test_second_auth_is_503(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext, auth_file: Path
) -> None:
    async with running(tls_files, auth_file=str(auth_file)) as srv:
        client = await tls_client(srv, client_ssl_context)
        assert (await client.command(f"AUTH PLAIN {plain('alice', PASSWORD)}"))[0] == 235
        assert await client.command(f"AUTH PLAIN {plain('bob', HASHED_PASSWORD)}") == (
            503,
            "5.5.1 already authenticated",
        )
        await client.command("MAIL FROM:<a@client.test>")
        await client.command("RCPT TO:<b@mx.test>")
        await client.command("DATA")
        await client.command(MESSAGE.decode() + ".")
        await client.aclose()
    assert srv.sink.messages[0].session.authenticated_as == "alice"


async def test_auth_out_of_sequence_is_503(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext, auth_file: Path
) -> None:
    async with running(tls_files, auth_file=str(auth_file)) as srv:
        client = await srv.connect()
        await client.reply()
        await client.command("STARTTLS")
        await client.starttls(client_ssl_context)
        # RFC 4954 §4: AUTH comes after EHLO ...
        assert await client.command(f"AUTH PLAIN {plain('alice', PASSWORD)}") == (
            503,
            "5.5.1 send EHLO first",
        )
        await client.command("EHLO client.test")
        await client.command("MAIL FROM:<a@client.test>")
        # ... and not inside a mail transaction.
        code, text = await client.command(f"AUTH PLAIN {plain('alice', PASSWORD)}")
        assert code == 503
        assert "transaction" in text
        await client.aclose()


async def test_auth_required_refuses_mail_before_auth(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext, auth_file: Path
) -> None:
    async with running(tls_files, auth_file=str(auth_file), auth_required=True) as srv:
        client = await tls_client(srv, client_ssl_context)
        assert await client.command("MAIL FROM:<a@client.test>") == (
            530,
            "5.7.0 authentication required",
        )
        assert (await client.command(f"AUTH PLAIN {plain('wrong', PASSWORD)}"))[0] == 535
        assert (await client.command("MAIL FROM:<a@client.test>"))[0] == 530
        assert (await client.command(f"AUTH PLAIN {plain('alice', PASSWORD)}"))[0] == 235
        assert (await client.command("MAIL FROM:<a@client.test>"))[0] == 250
        await client.aclose()


async def test_require_tls_refuses_auth_before_starttls(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext, auth_file: Path
) -> None:
    async with running(
        tls_files, auth_file=str(auth_file), require_tls=True, auth_insecure=True
    ) as srv:
        client = await srv.connect()
        await client.reply()
        await client.command("EHLO client.test")
        assert await client.command(f"AUTH PLAIN {plain('alice', PASSWORD)}") == (
            530,
            "5.7.0 must issue a STARTTLS command first",
        )
        assert (await client.command("MAIL FROM:<a@client.test>"))[0] == 530
        await client.command("STARTTLS")
        await client.starttls(client_ssl_context)
        await client.command("EHLO client.test")
        assert (await client.command(f"AUTH PLAIN {plain('alice', PASSWORD)}"))[0] == 235
        await client.aclose()


@pytest.mark.parametrize("limit", [None, 1, 5])
async def test_too_many_failures_close_the_connection_with_421(
    tls_files: dict[str, Path],
    client_ssl_context: ssl.SSLContext,
    auth_file: Path,
    limit: int | None,
) -> None:
    config: dict[str, Any] = {} if limit is None else {"max_auth_failures": limit}
    failures = 3 if limit is None else limit
    async with running(tls_files, auth_file=str(auth_file), **config) as srv:
        client = await tls_client(srv, client_ssl_context)
        for attempt in range(1, failures):
            assert (await client.command(f"AUTH LOGIN {b64('alice')}"))[0] == 334
            assert (await client.command(b64(f"wrong-{attempt}")))[0] == 535
        await client.send(f"AUTH PLAIN {plain('alice', 'wrong-' + PASSWORD)}\r\n".encode())
        assert await client.reply() == (535, "5.7.8 authentication credentials invalid")
        assert await client.reply() == (421, "4.7.0 too many failed authentication attempts")
        assert await client.read_to_eof() == b""
        await client.aclose()
    assert "(too many authentication failures)" in srv.logger.text
    assert secrets_in(srv.logger.text) == []


async def test_smtplib_login_with_a_bad_password_counts_each_mechanism(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext, auth_file: Path
) -> None:
    async with running(tls_files, auth_file=str(auth_file), max_auth_failures=2) as srv:

        def client() -> None:
            smtp = smtplib_client(srv.port)
            try:
                smtp.starttls(context=client_ssl_context)
                smtp.ehlo()
                # login() tries PLAIN, then LOGIN: two failures, and the second closes.
                with pytest.raises(smtplib.SMTPAuthenticationError) as exc_info:
                    smtp.login("alice", "wrong-" + PASSWORD)
                assert exc_info.value.smtp_code == 535
                # The 421 that followed the second 535 is what smtplib reads next.
                assert smtp.noop() == (421, b"4.7.0 too many failed authentication attempts")
            finally:
                smtp.close()

        await in_thread(client)
    assert srv.logger.text.count("Authentication failed") == 2
    assert secrets_in(srv.logger.text) == []


# ---------------------------------------------------------------------------- secrecy


async def test_credentials_never_reach_the_log(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext, auth_file: Path
) -> None:
    """Every AUTH path in one session, then a search of every log line, at every level."""
    contexts: list[Any] = []

    def on_auth(ctx: Any) -> None:
        contexts.append(ctx)
        ctx.logger.debug(f"hook saw {ctx!r}")

    async with running(
        tls_files, auth_file=str(auth_file), events={"AUTH": on_auth}, max_auth_failures=10
    ) as srv:
        client = await srv.connect()
        await client.reply()
        await client.command("EHLO client.test")
        # Refused before TLS (538) with the secret on the command line.
        await client.command(f"AUTH PLAIN {plain('alice', PASSWORD)}")
        await client.command("STARTTLS")
        await client.starttls(client_ssl_context)
        await client.command("EHLO client.test")
        await client.command(f"AUTH PLAIN {plain('alice', 'wrong-' + PASSWORD)}")
        await client.command(f"AUTH LOGIN {b64('bob')}")
        await client.command(b64("wrong-" + PASSWORD))
        await client.command("AUTH LOGIN")
        await client.command(b64("alice"))
        await client.command("*")
        await client.command(f"auth plain {plain('alice', PASSWORD)}")
        await client.command(f"AUTH PLAIN {plain('alice', PASSWORD)}")  # 503: twice
        await client.command("QUIT")
        await client.aclose()
    assert len(contexts) == 3
    text = srv.logger.text
    assert "Authenticated" in text
    assert "Authentication failed" in text
    assert secrets_in(text) == []
    for ctx in contexts:
        assert secrets_in(repr(ctx)) == []
    # The log says who, though: that is what an operator needs.
    assert "'alice'" in text


async def test_pipelined_credentials_after_a_refused_auth_do_not_reach_the_log(
    tls_files: dict[str, Path], auth_file: Path
) -> None:
    """A client that sends its LOGIN answers without waiting for 334 (here: a 538)."""
    async with running(tls_files, auth_file=str(auth_file)) as srv:
        client = await srv.connect()
        await client.reply()
        await client.command("EHLO client.test")
        await client.send(
            f"AUTH LOGIN\r\n{b64('alice')}\r\n{b64(PASSWORD)}\r\n"
            f"AUTH PLAIN\r\n{plain('alice', PASSWORD)}\r\n".encode()
        )
        assert (await client.reply())[0] == 538
        assert (await client.reply())[0] == 500
        assert (await client.reply())[0] == 500
        assert (await client.reply())[0] == 538
        assert (await client.reply())[0] == 500
        await client.aclose()
    assert secrets_in(srv.logger.text) == []


async def test_session_knows_the_login_until_the_end(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext, auth_file: Path
) -> None:
    at_close: list[tuple[str | None, str | None]] = []
    at_rcpt: list[str | None] = []
    events = {
        "RCPT": lambda ctx: at_rcpt.append(ctx.session.authenticated_as),
        "close": lambda session: at_close.append(
            (session.authenticated_as, session.auth_mechanism)
        ),
    }
    async with running(tls_files, auth_file=str(auth_file), events=events) as srv:
        await in_thread(
            lambda: login_over_starttls(
                srv.port, client_ssl_context, "bob", HASHED_PASSWORD, "LOGIN"
            )
        )
    assert at_rcpt == ["bob"]
    assert at_close == [("bob", "LOGIN")]


# An authenticator that fails (moved from test_review_regressions.py)


async def test_an_authenticator_that_raises_gets_451_and_the_error_event() -> None:
    from _live_server import running_server

    errors: list[BaseException] = []

    def authenticator(mechanism: str, login: str, password: str) -> bool:
        raise ConnectionError("user database unreachable")

    def error(exc: BaseException, mail: Any) -> None:
        errors.append(exc)

    async with running_server(
        {"error": error},
        config={"auth_insecure": True},
        deps={"authenticator": authenticator},
    ) as live:
        client = await live.connect()
        assert (await client.reply())[0] == 220
        token = base64.b64encode(b"\0bob\0secret-pw").decode()
        await client.send(f"EHLO c.test\r\nAUTH PLAIN {token}\r\n".encode())
        assert (await client.reply())[0] == 250
        code, text = await client.reply()
        assert (code, text) == (451, "4.3.0 local error in processing; try again later")
        # The session goes on, as after a failing hook.
        await client.send(b"NOOP\r\n")
        assert (await client.reply())[0] == 250
    assert [type(e) for e in errors] == [ConnectionError]
    assert not live.logger.find("internal error")
    assert not any("secret-pw" in m for m in live.logger.messages())


async def test_a_hanging_authenticator_gets_451_at_hook_timeout() -> None:
    import threading

    import trio
    from _live_server import HANG, running_server

    release = threading.Event()
    errors: list[BaseException] = []

    def authenticator(mechanism: str, login: str, password: str) -> bool:
        release.wait(HANG)  # a user database that never answers (until the test ends)
        return True

    try:
        async with running_server(
            {"error": lambda exc, mail: errors.append(exc)},
            config={"auth_insecure": True, "hook_timeout": 0.3},
            deps={"authenticator": authenticator},
        ) as live:
            client = await live.connect()
            assert (await client.reply())[0] == 220
            token = base64.b64encode(b"\0bob\0pw").decode()
            await client.send(f"EHLO c.test\r\nAUTH PLAIN {token}\r\n".encode())
            assert (await client.reply())[0] == 250
            with trio.fail_after(HANG):
                assert (await client.reply())[0] == 451
            await client.send(b"NOOP\r\n")
            assert (await client.reply())[0] == 250
    finally:
        release.set()
    assert [type(e).__name__ for e in errors] == ["HookTimeout"]
