"""End to end: knotd serves the sending domains' SPF, DKIM and DMARC records on a loopback
port; the server runs with ``verify=['spf','dkim','dmarc','arc']`` against it; smtplib sends
dkimpy-signed mail, from 127.0.0.1 (inside the SPF record) or 127.0.0.2 (outside it).
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require_tool

from trio_smtp import Reply
from trio_smtp.sinks import MaildirSink
from trio_smtp.testing import ThreadedServer

from .knot import Knot, start_knot, txt
from .signing import arc_seal, ed25519_key, message, rsa_key, sign

RSA = rsa_key("rsa1", "example.test")
ED = ed25519_key("ed1", "example.test")
FORWARDER = rsa_key("arc1", "forwarder.test")
QUARANTINE = rsa_key("rsa1", "quarantine.test")
HOSTNAME = "mx.receiver.test"
#: Any one wait of a client; a test that hits it found a stall.
CLIENT_TIMEOUT = 60


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Knot]:
    records = [
        ("example", "TXT", txt("v=spf1 ip4:127.0.0.1 -all")),
        ("_dmarc.example", "TXT", txt("v=DMARC1; p=reject; pct=100")),
        ("rsa1._domainkey.example", "TXT", txt(RSA.txt)),
        ("ed1._domainkey.example", "TXT", txt(ED.txt)),
        ("forwarder", "TXT", txt("v=spf1 ip4:127.0.0.1 -all")),
        ("arc1._domainkey.forwarder", "TXT", txt(FORWARDER.txt)),
        ("quarantine", "TXT", txt("v=spf1 ip4:127.0.0.1 -all")),
        ("_dmarc.quarantine", "TXT", txt("v=DMARC1; p=quarantine")),
    ]
    with start_knot(tmp_path_factory.mktemp("knot"), records) as server:
        yield server


def verifying_server(dns: str, **config: Any) -> ThreadedServer:
    events = config.pop("events", {})
    deps = config.pop("deps", None)
    schema = {
        "events": events,
        "config": {
            "hostname": HOSTNAME,
            "verify": ["spf", "dkim", "dmarc", "arc"],
            "dns_servers": [dns],
            **config,
        },
    }
    return ThreadedServer(schema, deps)


def send(
    port: int, content: bytes, *, source: str = "127.0.0.1", mail_from: str = "alice@example.test"
) -> None:
    with smtplib.SMTP(
        "127.0.0.1", port, source_address=(source, 0), timeout=CLIENT_TIMEOUT
    ) as client:
        client.ehlo("mail.example.test")
        client.sendmail(mail_from, ["bob@receiver.test"], content)


def results_of(smtp: ThreadedServer) -> Any:
    smtp.wait_for(1)
    mail = smtp.messages[-1]
    assert mail.auth_results is not None
    return mail.auth_results


@pytest.mark.parametrize("key", [RSA, ED], ids=["rsa-sha256", "ed25519-sha256"])
def test_signed_message_from_authorised_ip_passes_everything(knot: Knot, key: Any) -> None:
    with verifying_server(knot.server) as smtp:
        send(smtp.port, sign(message(), key))
        results = results_of(smtp)
    assert (results.spf.result, results.spf.identity) == ("pass", "alice@example.test")
    assert [(r.result, r.identity) for r in results.dkim] == [("pass", "example.test")]
    assert (results.dmarc.result, results.dmarc.p) == ("pass", "reject")
    assert results.arc.result == "none"


def test_big_spooled_message_verifies_streamed(knot: Knot) -> None:
    body = "".join(f"line {i} of a long message\r\n" for i in range(120_000))  # ~3.3 MB
    with verifying_server(knot.server) as smtp:  # a body bigger than the in-memory part of a spool
        send(smtp.port, sign(message(body=body), RSA))
        results = results_of(smtp)
    assert [r.result for r in results.dkim] == ["pass"]
    assert results.dmarc.result == "pass"


def test_body_changed_after_signing_fails_dkim_and_dmarc(knot: Knot) -> None:
    tampered = sign(message(), RSA).replace(b"signed message", b"forged message")
    with verifying_server(knot.server) as smtp:
        send(smtp.port, tampered, source="127.0.0.2")
        results = results_of(smtp)
    assert [r.result for r in results.dkim] == ["fail"]
    assert results.dmarc.result == "fail"
    assert results.dmarc.disposition == "reject"


def test_sender_ip_outside_the_spf_record_fails_spf(knot: Knot) -> None:
    seen: list[str] = []

    def rcpt(ctx: Any) -> None:
        # Known at MAIL time: a RCPT (or MAIL) hook can refuse on it.
        seen.append(ctx.mail.auth_results.spf.result)

    with verifying_server(knot.server, events={"RCPT": rcpt}) as smtp:
        send(smtp.port, sign(message(), RSA), source="127.0.0.2")
        results = results_of(smtp)
    assert seen == ["fail"]
    assert results.spf.result == "fail"
    # DKIM still passes and aligns: DMARC passes on DKIM alone.
    assert results.dmarc.result == "pass"


def test_null_sender_checks_the_helo_identity(knot: Knot) -> None:
    with verifying_server(knot.server) as smtp:
        with smtplib.SMTP("127.0.0.1", smtp.port, timeout=CLIENT_TIMEOUT) as client:
            client.ehlo("example.test")
            client.sendmail("", ["bob@receiver.test"], sign(message(), RSA))
        results = results_of(smtp)
    assert results.spf.result == "pass"
    assert dict(results.spf.properties) == {"smtp.helo": "example.test"}


def test_reject_policy_with_enforce_is_refused_with_550(knot: Knot) -> None:
    done: list[Any] = []
    with verifying_server(knot.server, dmarc_enforce=True, events={"done": done.append}) as smtp:
        with smtplib.SMTP("127.0.0.1", smtp.port, source_address=("127.0.0.2", 0)) as client:
            client.ehlo("mail.example.test")
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail("alice@example.test", ["bob@receiver.test"], message())
            # The connection stays usable for the next message.
            assert client.noop()[0] == 250
    assert refused.value.smtp_code == 550
    error = refused.value.smtp_error
    assert isinstance(error, bytes)
    assert error.startswith(b"5.7.1")
    assert done == []  # refused before the done hook


def test_quarantine_policy_with_enforce_flags_the_mail(knot: Knot) -> None:
    with verifying_server(knot.server, dmarc_enforce=True) as smtp:
        send(
            smtp.port,
            message(from_addr="carol@quarantine.test"),
            source="127.0.0.2",
            mail_from="carol@quarantine.test",
        )
        results = results_of(smtp)
    assert results.dmarc.result == "fail"
    assert results.quarantine


def test_arc_sealed_forwarded_message_passes_arc(knot: Knot) -> None:
    # The original signature is broken in forwarding (a list footer); the forwarder's ARC
    # seal vouches for what it saw.
    forwarded = arc_seal(sign(message(), RSA), FORWARDER, "forwarder.test")
    with verifying_server(knot.server) as smtp:
        send(smtp.port, forwarded, mail_from="list@forwarder.test")
        results = results_of(smtp)
    assert results.arc.result == "pass"
    assert results.spf.result == "pass"


def test_sink_prepends_the_header_and_drops_forged_ones(knot: Knot, tmp_path: Path) -> None:
    forged = (
        f"Authentication-Results: {HOSTNAME}; dkim=pass header.d=bank.test\r\n".encode()
        + b"Authentication-Results: elsewhere.test; spf=pass\r\n"
    )
    content = forged + sign(message(), RSA)
    maildir = MaildirSink(str(tmp_path))
    with verifying_server(knot.server, events={"done": maildir.deliver}) as smtp:
        send(smtp.port, content)  # 250 only once the file is stored and fsynced
    files = list((tmp_path / "new").iterdir())
    (stored,) = files
    parsed = email.message_from_bytes(stored.read_bytes(), policy=email.policy.default)
    ours = parsed.get_all("Authentication-Results")
    assert ours is not None
    assert len(ours) == 2
    assert str(ours[0]).startswith(f"{HOSTNAME};")
    assert "spf=pass smtp.mailfrom=alice@example.test" in str(ours[0])
    assert "dkim=pass" in str(ours[0])
    assert "dmarc=pass" in str(ours[0])
    assert str(ours[1]).startswith("elsewhere.test;")
    assert b"bank.test" not in stored.read_bytes()


class HeldResolver:
    """A "resolver" on 127.0.0.1 that reads every query and answers none until
    :meth:`release`, then SERVFAIL to each (held and later): what a stalled upstream
    resolver looks like, ended when the test says, not when a clock says."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.asked = threading.Event()
        self._released = False
        self._held: list[tuple[bytes, Any]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                query, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            with self._lock:
                if not self._released:
                    self._held.append((query, peer))
                    self.asked.set()
                    continue
            self._servfail(query, peer)

    def _servfail(self, query: bytes, peer: Any) -> None:
        import dns.message
        import dns.rcode

        response = dns.message.make_response(dns.message.from_wire(query))
        response.set_rcode(dns.rcode.SERVFAIL)
        try:
            self.sock.sendto(response.to_wire(), peer)
        except OSError:
            pass

    def release(self) -> None:
        with self._lock:
            self._released = True
            held, self._held = self._held, []
        for query, peer in held:
            self._servfail(query, peer)

    def __enter__(self) -> HeldResolver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()  # ends the serving thread


def test_a_stalled_resolver_gives_temperror_and_stalls_nobody_else() -> None:
    resolver = HeldResolver()
    order: list[str] = []
    spf_seen: list[str] = []

    def mail_hook(ctx: Any) -> None:
        spf_seen.append(ctx.mail.auth_results.spf.result)

    def done(mail: Any) -> None:
        order.append(f"delivered {mail.mail_from or '<>'}")

    # The budget only bounds a hang here: the resolver's SERVFAIL ends the wait.
    server = verifying_server(
        resolver.address, dns_budget=60.0, events={"MAIL": mail_hook, "done": done}
    )
    with resolver, server as smtp:
        slow = smtplib.SMTP("127.0.0.1", smtp.port, timeout=CLIENT_TIMEOUT)
        slow.ehlo("mail.example.test")
        reply: list[tuple[int, bytes]] = []
        waiting = threading.Thread(
            target=lambda: reply.append(slow.docmd("MAIL", "FROM:<alice@example.test>"))
        )
        waiting.start()
        assert resolver.asked.wait(CLIENT_TIMEOUT)  # the first connection waits on DNS
        # Meanwhile a second connection (no DNS needed: an address-literal HELO, a null
        # sender, no From: header) gets a whole message through.
        with smtplib.SMTP("127.0.0.1", smtp.port, timeout=CLIENT_TIMEOUT) as quick:
            quick.ehlo("[127.0.0.1]")
            quick.sendmail("", ["bob@receiver.test"], b"Subject: no author\r\n\r\nhi\r\n")
            order.append("second connection done")
        assert not reply  # still waiting on its lookup
        resolver.release()
        waiting.join(CLIENT_TIMEOUT)
        order.append("first connection answered")
        slow.close()
    assert reply[0][0] == 250
    # The second connection's MAIL ran while the first's lookup was still held.
    assert spf_seen == ["none", "temperror"]
    assert order == ["delivered <>", "second connection done", "first connection answered"]


def test_a_resolver_that_never_answers_gives_temperror_at_the_dns_budget() -> None:
    resolver = HeldResolver()  # never released: only the budget ends the wait
    spf_seen: list[str] = []

    def mail_hook(ctx: Any) -> None:
        spf_seen.append(ctx.mail.auth_results.spf.result)

    server = verifying_server(resolver.address, dns_budget=0.5, events={"MAIL": mail_hook})
    with resolver, server as smtp:
        with smtplib.SMTP("127.0.0.1", smtp.port, timeout=CLIENT_TIMEOUT) as client:
            client.ehlo("mail.example.test")
            code, _ = client.docmd("MAIL", "FROM:<alice@example.test>")
    assert resolver.asked.is_set()
    assert code == 250
    assert spf_seen == ["temperror"]


def test_hook_can_refuse_on_dmarc_fail(knot: Knot) -> None:
    def done(mail: Any) -> None:
        if mail.auth_results.dmarc.result == "fail":
            raise Reply(550, "5.7.1 DMARC failed")

    with verifying_server(knot.server, events={"done": done}) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(smtp.port, message(), source="127.0.0.2")
    assert refused.value.smtp_code == 550


def test_swaks_from_outside_the_spf_record_with_enforce_gets_550(
    knot: Knot, tmp_path: Path
) -> None:
    swaks = require_tool("swaks")
    signed = tmp_path / "signed.eml"
    signed.write_bytes(sign(message(), ED))
    unsigned = tmp_path / "unsigned.eml"
    unsigned.write_bytes(message())
    with verifying_server(knot.server, dmarc_enforce=True) as smtp:

        def run(data: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [swaks, "--server", f"127.0.0.1:{smtp.port}", "--local-interface", "127.0.0.2",
                 "--helo", "mail.example.test", "--from", "alice@example.test",
                 "--to", "bob@receiver.test", "--data", str(data)],
                capture_output=True, text=True, timeout=CLIENT_TIMEOUT,
            )  # fmt: skip

        # Outside the SPF record but DKIM-signed (ed25519): DMARC passes on DKIM.
        ok = run(signed)
        assert ok.returncode == 0, ok.stdout
        results = results_of(smtp)
        assert (results.spf.result, results.dmarc.result) == ("fail", "pass")
        refused = run(unsigned)
    assert "<** 550 5.7.1" in refused.stdout


def test_lmtp_refusal_is_one_550_per_recipient(knot: Knot) -> None:
    with verifying_server(knot.server, dmarc_enforce=True, lmtp=True) as smtp:
        with smtplib.LMTP("127.0.0.1", smtp.port, source_address=("127.0.0.2", 0)) as client:
            client.ehlo("mail.example.test")
            client.mail("alice@example.test")
            client.rcpt("bob@receiver.test")
            client.rcpt("carol@receiver.test")
            client.putcmd("data")
            assert client.getreply()[0] == 354
            client.send(message() + b".\r\n")
            replies = [client.getreply(), client.getreply()]
    assert [code for code, _text in replies] == [550, 550]
    assert all(text.startswith(b"5.7.1") for _code, text in replies)
