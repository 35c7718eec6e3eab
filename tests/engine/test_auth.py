"""AUTH PLAIN and LOGIN (RFC 4954, RFC 4616), and the policy switches around them."""

from __future__ import annotations

import base64

import pytest

from trio_smtp.engine import (
    AuthCredentials,
    CommandRejected,
    ConnectionClosed,
    EngineConfig,
    Event,
    MailFrom,
    Reply,
    State,
)

from ._helpers import Answerer, Driver

EHLO = b"EHLO client.example\r\n"
INSECURE = EngineConfig(auth_mechanisms=("PLAIN", "LOGIN"), auth_insecure=True)
SECRET = "s3cr3t-Pa55"
ACCEPT = Reply(235, "2.7.0 authentication successful")
USERNAME_PROMPT = b"334 VXNlcm5hbWU6\r\n"
PASSWORD_PROMPT = b"334 UGFzc3dvcmQ6\r\n"
INVALID = b"535 5.7.8 authentication credentials invalid\r\n"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def accept_all(event: Event) -> Reply | None:
    return ACCEPT if isinstance(event, AuthCredentials) else None


def ready(
    config: EngineConfig = INSECURE, *, answer: Answerer = accept_all, tls: bool = False
) -> Driver:
    driver = Driver(config, answer=answer, tls_active=tls)
    driver.feed(EHLO)
    return driver


def credentials(driver: Driver) -> list[AuthCredentials]:
    return [e for e in driver.events if isinstance(e, AuthCredentials)]


def test_plain_with_initial_response() -> None:
    driver = ready()
    out = driver.send(b"AUTH PLAIN " + b64(b"\x00bob\x00" + SECRET.encode()) + b"\r\n")
    assert out == b"235 2.7.0 authentication successful\r\n"
    [cred] = credentials(driver)
    assert (cred.mechanism, cred.login, cred.password, cred.authzid) == ("PLAIN", "bob", SECRET, "")
    assert driver.engine.session.authenticated_as == "bob"


def test_plain_with_empty_challenge_then_response() -> None:
    driver = ready()
    assert driver.send(b"AUTH PLAIN\r\n") == b"334 \r\n"
    assert driver.engine.state is State.AUTH
    out = driver.send(b64(b"admin\x00bob\x00" + SECRET.encode()) + b"\r\n")
    assert out == b"235 2.7.0 authentication successful\r\n"
    [cred] = credentials(driver)
    assert (cred.login, cred.password, cred.authzid) == ("bob", SECRET, "admin")
    assert driver.state() is State.COMMAND


def test_plain_mechanism_name_is_case_insensitive() -> None:
    driver = ready()
    driver.feed(b"auth plain " + b64(b"\x00u\x00p") + b"\r\n")
    assert credentials(driver)[0].mechanism == "PLAIN"


def test_login_with_both_prompts() -> None:
    driver = ready()
    assert driver.send(b"AUTH LOGIN\r\n") == USERNAME_PROMPT
    assert driver.send(b64(b"bob") + b"\r\n") == PASSWORD_PROMPT
    assert driver.send(b64(SECRET.encode()) + b"\r\n") == (
        b"235 2.7.0 authentication successful\r\n"
    )
    [cred] = credentials(driver)
    assert (cred.mechanism, cred.login, cred.password) == ("LOGIN", "bob", SECRET)


def test_login_with_initial_response_skips_the_username_prompt() -> None:
    driver = ready()
    assert driver.send(b"AUTH LOGIN " + b64(b"bob") + b"\r\n") == PASSWORD_PROMPT
    driver.feed(b64(SECRET.encode()) + b"\r\n")
    [cred] = credentials(driver)
    assert (cred.login, cred.password) == ("bob", SECRET)


def test_pipelined_login_exchange() -> None:
    driver = ready()
    out = driver.send(b"AUTH LOGIN\r\n" + b64(b"bob") + b"\r\n" + b64(b"pw") + b"\r\nNOOP\r\n")
    assert out == (
        USERNAME_PROMPT
        + PASSWORD_PROMPT
        + b"235 2.7.0 authentication successful\r\n"
        + b"250 2.0.0 OK\r\n"
    )


def test_empty_response_is_an_equals_sign() -> None:
    driver = ready()
    driver.feed(b"AUTH LOGIN\r\n=\r\n=\r\n")
    [cred] = credentials(driver)
    assert (cred.login, cred.password) == ("", "")


def test_default_reply_refuses_credentials() -> None:
    driver = ready(answer=lambda e: None)
    assert driver.send(b"AUTH PLAIN " + b64(b"\x00bob\x00pw") + b"\r\n") == INVALID
    assert driver.engine.session.authenticated_as is None


@pytest.mark.parametrize("mechanism", [b"PLAIN", b"LOGIN"])
def test_star_cancels_the_exchange(mechanism: bytes) -> None:
    # RFC 4954 §4: "*" cancels with 501.
    driver = ready()
    driver.feed(b"AUTH " + mechanism + b"\r\n")
    assert driver.send(b"*\r\n") == b"501 5.7.0 authentication cancelled\r\n"
    assert driver.engine.state is State.COMMAND
    assert not credentials(driver)
    assert driver.send(b"NOOP\r\n") == b"250 2.0.0 OK\r\n"


@pytest.mark.parametrize("response", [b"!!!notbase64", b"YWJj=x", b"\xff\xfe"])
def test_malformed_base64_is_501_5_5_2(response: bytes) -> None:
    driver = ready()
    driver.feed(b"AUTH PLAIN\r\n")
    assert driver.send(response + b"\r\n") == (
        b"501 5.5.2 cannot decode the response as base64\r\n"
    )
    assert driver.engine.state is State.COMMAND
    assert not credentials(driver)


def test_malformed_base64_initial_response_is_501() -> None:
    driver = ready()
    assert driver.send(b"AUTH PLAIN ***\r\n") == (
        b"501 5.5.2 cannot decode the response as base64\r\n"
    )


@pytest.mark.parametrize("message", [b"bob\x00pw", b"\x00\x00pw", b"a\x00b\x00c\x00d"])
def test_malformed_plain_message_is_501(message: bytes) -> None:
    driver = ready()
    assert driver.send(b"AUTH PLAIN " + b64(message) + b"\r\n") == (
        b"501 5.5.2 malformed PLAIN response\r\n"
    )


def test_credentials_that_are_not_utf8_are_501() -> None:
    driver = ready()
    assert driver.send(b"AUTH PLAIN " + b64(b"\x00bob\x00\xff") + b"\r\n") == (
        b"501 5.5.2 credentials are not valid UTF-8\r\n"
    )


def test_auth_before_tls_is_538() -> None:
    # RFC 4954 §6: 538 5.7.11 encryption required for the mechanism.
    driver = ready(EngineConfig(auth_mechanisms=("PLAIN",)))
    assert driver.send(b"AUTH PLAIN\r\n") == (
        b"538 5.7.11 encryption required for requested authentication mechanism\r\n"
    )
    assert driver.engine.state is State.COMMAND


def test_auth_over_tls_is_allowed() -> None:
    driver = ready(EngineConfig(auth_mechanisms=("PLAIN",)), tls=True)
    assert driver.send(b"AUTH PLAIN " + b64(b"\x00u\x00p") + b"\r\n") == (
        b"235 2.7.0 authentication successful\r\n"
    )


def test_already_authenticated_is_503() -> None:
    driver = ready()
    driver.feed(b"AUTH PLAIN " + b64(b"\x00bob\x00pw") + b"\r\n")
    assert driver.send(b"AUTH LOGIN\r\n") == b"503 5.5.1 already authenticated\r\n"


def test_unknown_mechanism_is_504() -> None:
    driver = ready()
    assert driver.send(b"AUTH CRAM-MD5\r\n") == b"504 5.5.4 unrecognized authentication type\r\n"
    driver = ready(EngineConfig(auth_mechanisms=("PLAIN",), auth_insecure=True))
    assert driver.send(b"AUTH LOGIN\r\n") == b"504 5.5.4 unrecognized authentication type\r\n"


@pytest.mark.parametrize("line", [b"AUTH", b"AUTH PLAIN a b"])
def test_auth_syntax_errors(line: bytes) -> None:
    driver = ready()
    assert driver.send(line + b"\r\n") == (
        b"501 5.5.4 syntax: AUTH mechanism [initial-response]\r\n"
    )


def test_max_auth_failures_closes_with_421() -> None:
    config = EngineConfig(auth_mechanisms=("PLAIN",), auth_insecure=True, max_auth_failures=2)
    driver = ready(config, answer=lambda e: None)
    attempt = b"AUTH PLAIN " + b64(b"\x00bob\x00guess") + b"\r\n"
    assert driver.send(attempt) == INVALID
    assert driver.closed is None
    assert driver.send(attempt + b"NOOP\r\n") == (
        INVALID + b"421 4.7.0 too many failed authentication attempts\r\n"
    )
    assert driver.closed == ConnectionClosed(reason="auth-failures")


def test_successful_auth_resets_the_failure_count() -> None:
    config = EngineConfig(auth_mechanisms=("PLAIN",), auth_insecure=True, max_auth_failures=2)
    answers = iter([None, ACCEPT])
    driver = ready(
        config, answer=lambda e: next(answers) if isinstance(e, AuthCredentials) else None
    )
    attempt = b"AUTH PLAIN " + b64(b"\x00bob\x00pw") + b"\r\n"
    driver.feed(attempt + attempt)
    assert driver.closed is None
    assert driver.engine.session.authenticated_as == "bob"


def test_password_never_appears_in_the_event_repr() -> None:
    driver = ready()
    driver.feed(b"AUTH PLAIN " + b64(b"\x00bob\x00" + SECRET.encode()) + b"\r\n")
    driver.feed(b"RSET\r\n")
    [cred] = credentials(driver)
    assert SECRET not in repr(cred)
    assert SECRET not in str(cred)
    assert "bob" in repr(cred)
    assert all(SECRET not in repr(e) for e in driver.events)


def test_login_password_never_appears_in_any_repr() -> None:
    driver = ready()
    driver.feed(b"AUTH LOGIN\r\n" + b64(b"bob") + b"\r\n" + b64(SECRET.encode()) + b"\r\n")
    encoded = b64(SECRET.encode()).decode()
    for event in driver.events:
        assert SECRET not in repr(event)
        assert encoded not in repr(event)
    assert SECRET not in repr(driver.engine)


@pytest.mark.parametrize(
    "config",
    [
        EngineConfig(auth_mechanisms=("PLAIN",)),  # 538 before TLS
        EngineConfig(auth_mechanisms=("LOGIN",), auth_insecure=True),  # 504
        EngineConfig(auth_mechanisms=("PLAIN",), require_tls=True),  # 530
    ],
    ids=["538", "504", "530"],
)
def test_refused_auth_line_never_shows_the_initial_response(config: EngineConfig) -> None:
    driver = ready(config)
    initial = b64(b"\x00bob\x00" + SECRET.encode())
    driver.feed(b"AUTH PLAIN " + initial + b"\r\n")
    [rejected] = [e for e in driver.events if isinstance(e, CommandRejected)]
    assert initial.decode() not in repr(rejected)


def test_auth_required_refuses_mail_before_auth() -> None:
    config = EngineConfig(auth_mechanisms=("PLAIN",), auth_insecure=True, auth_required=True)
    driver = ready(config)
    assert driver.send(b"MAIL FROM:<a@b>\r\n") == b"530 5.7.0 authentication required\r\n"
    assert not driver.of_type(MailFrom)
    driver.feed(b"AUTH PLAIN " + b64(b"\x00bob\x00pw") + b"\r\n")
    assert driver.send(b"MAIL FROM:<a@b>\r\n") == b"250 2.1.0 sender OK\r\n"


def test_require_tls_refuses_mail_and_auth_before_tls() -> None:
    config = EngineConfig(require_tls=True, starttls=True, auth_mechanisms=("PLAIN",))
    driver = ready(config)
    # DATA ends a pipelined group (RFC 2920 §3.1): what follows comes in a new flight.
    out = driver.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
    out += driver.send(b"BDAT 3\r\nabcAUTH PLAIN\r\nNOOP\r\n")
    need_tls = b"530 5.7.0 must issue a STARTTLS command first\r\n"
    assert out == need_tls * 5 + b"250 2.0.0 OK\r\n"


def test_require_tls_allows_everything_over_tls() -> None:
    config = EngineConfig(require_tls=True, starttls=True)
    driver = ready(config, tls=True)
    assert driver.send(b"MAIL FROM:<a@b>\r\n") == b"250 2.1.0 sender OK\r\n"


def test_auth_line_longer_than_a_command_line_is_allowed() -> None:
    # RFC 4954 §4: an AUTH line with an initial response may exceed 512 octets.
    driver = ready()
    long_password = b"p" * 2000
    out = driver.send(b"AUTH PLAIN " + b64(b"\x00bob\x00" + long_password) + b"\r\n")
    assert out == b"235 2.7.0 authentication successful\r\n"
    assert credentials(driver)[0].password == long_password.decode()


def test_line_limits_hold_when_a_long_line_arrives_in_pieces() -> None:
    # The engine looks for "AUTH " only once the buffer holds more than the shorter of the
    # two limits: a line that crosses them piece by piece must meet the same limit as one
    # that arrives whole.
    driver = ready()
    line = b"AUTH PLAIN " + b64(b"\x00bob\x00" + b"p" * 2000) + b"\r\n"
    out = b"".join(driver.send(line[i : i + 100]) for i in range(0, len(line), 100))
    assert out == b"235 2.7.0 authentication successful\r\n"
    mail = b"MAIL FROM:<" + b"a" * 600 + b"@b>\r\n"
    out = b"".join(driver.send(mail[i : i + 100]) for i in range(0, len(mail), 100))
    assert out == b"500 5.5.6 line too long\r\n"
    assert driver.send(b"NOOP\r\n") == b"250 2.0.0 OK\r\n"


def test_auth_line_limit_shorter_than_a_command_line_still_holds() -> None:
    config = EngineConfig(auth_mechanisms=("PLAIN",), auth_insecure=True, max_auth_line=100)
    driver = ready(config)
    line = b"AUTH PLAIN " + b64(b"\x00bob\x00" + b"p" * 200) + b"\r\n"
    assert len(line) < config.max_command_line
    out = b"".join(driver.send(line[i : i + 50]) for i in range(0, len(line), 50))
    assert out == b"500 5.5.6 line too long\r\n"
    assert not credentials(driver)
    assert driver.send(b"NOOP\r\n") == b"250 2.0.0 OK\r\n"


def test_auth_response_line_over_the_limit_is_500() -> None:
    config = EngineConfig(auth_mechanisms=("PLAIN",), auth_insecure=True, max_auth_line=100)
    driver = ready(config)
    driver.feed(b"AUTH PLAIN\r\n")
    assert driver.send(b"A" * 200 + b"\r\n") == b"500 5.5.6 authentication line too long\r\n"
    assert driver.engine.state is State.COMMAND
    assert driver.send(b"NOOP\r\n") == b"250 2.0.0 OK\r\n"


def test_ehlo_offers_auth_only_over_tls_unless_insecure() -> None:
    plain = EngineConfig(auth_mechanisms=("PLAIN", "LOGIN"))
    assert b"AUTH" not in Driver(plain).send(EHLO)
    assert Driver(plain, tls_active=True).send(EHLO).endswith(b"250 AUTH PLAIN LOGIN\r\n")
    assert Driver(INSECURE).send(EHLO).endswith(b"250 AUTH PLAIN LOGIN\r\n")


def test_config_refuses_unknown_mechanisms() -> None:
    with pytest.raises(ValueError, match="CRAM-MD5"):
        EngineConfig(auth_mechanisms=("CRAM-MD5",))
