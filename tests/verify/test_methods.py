"""DKIM, DMARC, ARC and the Authentication-Results header, with DNS from a StaticResolver."""

from __future__ import annotations

import io
import tracemalloc

import authres
import pytest

from trio_smtp.verify._dns import StaticResolver
from trio_smtp.verify._header import DeliveryFile, authserv_id, delivery_parts, remove_forged
from trio_smtp.verify._results import AuthResults, MethodResult
from trio_smtp.verify._verifier import Verifier, parse_methods

from .signing import arc_seal, ed25519_key, message, rsa_key, sign

RSA = rsa_key("rsa1", "example.test")
ED = ed25519_key("ed1", "example.test")
FORWARDER = rsa_key("arc1", "forwarder.test")


def zone(
    dmarc: str | None = "v=DMARC1; p=reject",
    extra: dict[tuple[str, str], tuple[str, ...] | None] | None = None,
) -> StaticResolver:
    records: dict[tuple[str, str], tuple[str, ...] | None] = {
        (RSA.name, "TXT"): (RSA.txt,),
        (ED.name, "TXT"): (ED.txt,),
        (FORWARDER.name, "TXT"): (FORWARDER.txt,),
        ("example.test", "TXT"): ("v=spf1 ip4:192.0.2.0/24 -all",),
    }
    if dmarc is not None:
        records[("_dmarc.example.test", "TXT")] = (dmarc,)
    records.update(extra or {})
    return StaticResolver(records)


def verifier(resolver: StaticResolver, *, enforce: bool = False) -> Verifier:
    return Verifier(
        parse_methods("spf,dkim,dmarc,arc"),
        resolver=resolver,
        dmarc_enforce=enforce,
    )


async def verify(
    v: Verifier, content: bytes, ip: str = "192.0.2.10", mail_from: str = "alice@example.test"
) -> AuthResults:
    results = await v.check_sender(
        ip, mail_from, "mail.example.test", authserv_id="mx.receiver.test"
    )
    return await v.check_message(results, content)


@pytest.mark.parametrize("key", [RSA, ED], ids=["rsa-sha256", "ed25519-sha256"])
async def test_signed_message_passes_dkim_and_dmarc(key: object) -> None:
    results = await verify(verifier(zone()), sign(message(), key))  # type: ignore[arg-type]
    assert results.spf is not None
    assert results.spf.result == "pass"
    assert [(r.result, r.identity) for r in results.dkim] == [("pass", "example.test")]
    assert results.dmarc is not None
    assert results.dmarc.result == "pass"
    assert results.dmarc.p == "reject"
    assert results.dmarc.pct == 100
    assert results.arc is not None
    assert results.arc.result == "none"


async def test_every_signature_is_reported() -> None:
    content = sign(sign(message(), RSA), ED)
    results = await verify(verifier(zone()), content)
    assert sorted(r.result for r in results.dkim) == ["pass", "pass"]
    selectors = {dict(r.properties)["header.s"] for r in results.dkim}
    assert selectors == {"rsa1", "ed1"}


async def test_body_changed_after_signing_fails_dkim_and_dmarc() -> None:
    signed = sign(message(), RSA)
    tampered = signed.replace(b"signed message", b"forged message")
    results = await verify(verifier(zone()), tampered, ip="198.51.100.1")
    assert [r.result for r in results.dkim] == ["fail"]
    assert "body hash" in results.dkim[0].reason
    assert results.spf is not None
    assert results.spf.result == "fail"
    assert results.dmarc is not None
    assert results.dmarc.result == "fail"
    assert results.dmarc.disposition == "reject"


async def test_spf_alone_aligns_for_dmarc() -> None:
    results = await verify(verifier(zone()), message())
    assert [r.result for r in results.dkim] == ["none"]
    assert results.dmarc is not None
    assert results.dmarc.result == "pass"
    assert results.dmarc.reason == "aligned spf"


async def test_strict_alignment_refuses_a_subdomain() -> None:
    sub = rsa_key("rsa1", "mail.example.test")
    resolver = zone(
        dmarc="v=DMARC1; p=quarantine; adkim=s; aspf=s",
        extra={(sub.name, "TXT"): (sub.txt,)},
    )
    results = await verify(verifier(resolver), sign(message(), sub), ip="198.51.100.1")
    assert [r.result for r in results.dkim] == ["pass"]
    assert results.dmarc is not None
    assert results.dmarc.result == "fail"
    # Relaxed (the default) would accept it.
    resolver = zone(dmarc="v=DMARC1; p=quarantine", extra={(sub.name, "TXT"): (sub.txt,)})
    results = await verify(verifier(resolver), sign(message(), sub), ip="198.51.100.1")
    assert results.dmarc is not None
    assert results.dmarc.result == "pass"


async def test_subdomain_without_record_takes_sp_of_organisational_domain() -> None:
    resolver = zone(dmarc="v=DMARC1; p=none; sp=reject; pct=100")
    content = message(from_addr="carol@news.example.test")
    results = await verify(verifier(resolver), content, ip="198.51.100.1")
    assert ("_dmarc.news.example.test", "TXT") in resolver.queries
    assert results.dmarc is not None
    assert results.dmarc.result == "fail"
    assert (results.dmarc.policy, results.dmarc.p, results.dmarc.sp) == ("reject", "none", "reject")


async def test_enforce_refuses_reject_and_flags_quarantine() -> None:
    bad = message()
    v = verifier(zone(), enforce=True)
    results = await verify(v, bad, ip="198.51.100.1")
    reply = v.refusal(results)
    assert reply is not None
    assert (reply.code, reply.text[:5]) == (550, "5.7.1")
    v = verifier(zone(dmarc="v=DMARC1; p=quarantine"), enforce=True)
    results = await verify(v, bad, ip="198.51.100.1")
    assert v.refusal(results) is None
    assert results.quarantine
    # Not enforcing: reported, never acted on.
    v = verifier(zone())
    results = await verify(v, bad, ip="198.51.100.1")
    assert v.refusal(results) is None
    assert not results.quarantine


async def test_dns_failure_is_temperror_everywhere() -> None:
    resolver = StaticResolver(
        {
            ("example.test", "TXT"): None,
            (RSA.name, "TXT"): None,
            ("_dmarc.example.test", "TXT"): None,
            (FORWARDER.name, "TXT"): None,
        }
    )
    content = arc_seal(sign(message(), RSA), FORWARDER, "forwarder.test")
    results = await verify(verifier(resolver), content)
    assert results.spf is not None
    assert results.spf.result == "temperror"
    assert [r.result for r in results.dkim] == ["temperror"]
    assert results.dmarc is not None
    assert results.dmarc.result == "temperror"
    assert results.arc is not None
    assert results.arc.result == "fail"
    assert "key lookup failed" in results.arc.reason


async def test_missing_key_is_permerror() -> None:
    resolver = zone()
    content = sign(message(), rsa_key("gone", "example.test"))
    results = await verify(verifier(resolver), content)
    assert [r.result for r in results.dkim] == ["permerror"]


async def test_arc_sealed_forwarded_message_passes_and_a_broken_seal_fails() -> None:
    forwarded = arc_seal(sign(message(), RSA), FORWARDER, "forwarder.test")
    results = await verify(verifier(zone()), forwarded)
    assert results.arc is not None
    assert results.arc.result == "pass", results.arc
    assert dict(results.arc.properties)["header.as-d"] == "forwarder.test"
    broken = forwarded.replace(b"signed message", b"forged message")
    results = await verify(verifier(zone()), broken)
    assert results.arc is not None
    assert results.arc.result == "fail"


def test_header_is_rfc8601_and_parses_back() -> None:
    results = AuthResults(
        authserv_id="mx.receiver.test",
        spf=MethodResult(method="spf", result="pass", properties=(("smtp.mailfrom", "a@x.test"),)),
        dkim=(
            MethodResult(
                method="dkim",
                result="pass",
                properties=(("header.d", "x.test"), ("header.s", "sel")),
            ),
        ),
    )
    text = results.header()
    assert text == (
        "Authentication-Results: mx.receiver.test; spf=pass smtp.mailfrom=a@x.test; "
        "dkim=pass header.d=x.test header.s=sel"
    )
    parsed = authres.AuthenticationResultsHeader.parse(text)
    assert parsed.authserv_id == "mx.receiver.test"
    assert [r.method for r in parsed.results] == ["spf", "dkim"]
    assert results.header_bytes().startswith(b"Authentication-Results: mx.receiver.test;\r\n\t")


def test_client_text_cannot_break_the_header() -> None:
    results = AuthResults(
        authserv_id="mx.receiver.test",
        spf=MethodResult(
            method="spf", result="fail", properties=(("smtp.mailfrom", "x\r\nBcc: y@evil (z)"),)
        ),
    )
    raw = results.header_bytes()
    assert raw.count(b"\r\n") == 2
    assert b"\r\nBcc" not in raw


def test_forged_header_claiming_our_name_is_removed_others_kept() -> None:
    content = (
        b"Authentication-Results: MX.receiver.test; dkim=pass\r\n header.d=bank.test\r\n"
        b"Authentication-Results: (comment) mx.receiver.test; spf=pass\r\n"
        b"Authentication-Results: other.test; spf=fail\r\n"
        b"Subject: hi\r\n\r\n"
        b"Authentication-Results: mx.receiver.test; in the body stays\r\n"
    )
    out = remove_forged(content, "mx.receiver.test")
    assert out == (
        b"Authentication-Results: other.test; spf=fail\r\n"
        b"Subject: hi\r\n\r\n"
        b"Authentication-Results: mx.receiver.test; in the body stays\r\n"
    )
    assert authserv_id(b" (c) host.test ; x") == "host.test"


def test_delivery_parts_leave_unverified_mail_alone() -> None:
    class Unverified:
        auth_results = None

    assert delivery_parts(Unverified(), b"x") == (b"", b"x")


def test_unknown_method_is_named() -> None:
    with pytest.raises(ValueError, match="'spam'"):
        parse_methods("spf,spam")
    assert parse_methods("dmarc") == {"spf", "dkim", "dmarc"}


async def test_message_without_headers_is_no_crash() -> None:
    results = await verify(verifier(zone()), b"no header line at all\r\n")
    assert [r.result for r in results.dkim] == ["none"]
    assert results.dmarc is not None
    assert results.dmarc.result == "none"


class _Trickle(io.BytesIO):
    """A file that returns at most a few bytes per read, as a slow spool might."""

    def read(self, size: int | None = -1) -> bytes:
        return super().read(3 if size is None or size < 0 else min(size, 3))


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
def test_delivery_file_streams_the_same_bytes_as_remove_forged(ending: bytes) -> None:
    content = ending.join(
        [
            b"Received: from a",
            b"Authentication-Results:",
            b"   mx.receiver.test; spf=pass",
            b"Subject: x",
            b"Authentication-Results: other.test; none",
            b"",
            b"Authentication-Results: mx.receiver.test; body text",
            b"",
        ]
    )
    expected = remove_forged(content, "mx.receiver.test")
    assert b"spf=pass" not in expected
    assert expected.count(b"Authentication-Results") == 2
    with DeliveryFile(_Trickle(content), "mx.receiver.test") as f:
        pieces = []
        while chunk := f.read(5):
            pieces.append(chunk)
    assert b"".join(pieces) == expected


async def test_signature_count_is_bounded() -> None:
    content = message()
    for i in range(40):
        content = sign(content, rsa_key(f"s{i}", "example.test"))
    resolver = zone()
    results = await verify(verifier(resolver), content)
    assert len(results.dkim) == 16
    key_queries = [q for q in resolver.queries if "._domainkey." in q[0]]
    assert len(key_queries) == 16


async def test_spooled_body_is_verified_without_loading_it() -> None:
    from trio_smtp._mail import Mail
    from trio_smtp._spool import Spool

    body = Spool(spool_memory=1024).body()
    content = sign(message(body="a long line of the body\r\n" * 400_000), ED)  # 10 MB
    for i in range(0, len(content), 1 << 16):
        await body.append(content[i : i + (1 << 16)])
    await body.finish()
    assert body.spooled
    del content
    mail = Mail(id="1", session=None, body=body)  # type: ignore[arg-type]
    v = verifier(zone())
    tracemalloc.start()
    try:
        reply = await v.message_received(mail, authserv_id="mx.receiver.test")
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The body is hashed as it streams from the spool: memory is nowhere near its size.
    assert peak < 4_000_000  # (the Public Suffix List, loaded on first use, is most of it)
    assert reply is None
    assert mail.auth_results is not None
    assert [r.result for r in mail.auth_results.dkim] == ["pass"]
    # Still read from the spool file: the verification did not load the content.
    with mail.open_file() as f:
        assert isinstance(f, io.BufferedReader)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ("v=DMARC1; p=reject", {"p": "reject"}),
        ("v=DMARC1;p=QUARANTINE;sp=none;pct=20", {"p": "quarantine", "sp": "none", "pct": "20"}),
        ("v=DMARC1; rua=mailto:d@example.test", {"p": "none"}),  # RFC 7489 §6.6.3
        ("v=DMARC1; p=bogus", None),
        ("p=reject; v=DMARC1", None),  # v= must come first
        ("v=DMARC1; p=reject; sp=bogus", {"p": "reject"}),
    ],
)
def test_dmarc_record_parsing(record: str, expected: dict[str, str] | None) -> None:
    from trio_smtp.verify._dmarc import parse_record

    parsed = parse_record(record)
    if expected is None:
        assert parsed is None
    else:
        assert parsed is not None
        assert {k: v for k, v in parsed.items() if k in expected} == expected


@pytest.mark.parametrize(
    ("draw", "disposition"), [(0, "reject"), (49, "reject"), (50, "quarantine")]
)
async def test_pct_samples_the_policy(draw: int, disposition: str) -> None:
    from trio_smtp.verify._dmarc import check_dmarc

    resolver = zone(dmarc="v=DMARC1; p=reject; pct=50")
    headers = [(b"From", b" Alice <alice@example.test>\r\n")]
    spf = MethodResult(method="spf", result="fail", identity="alice@example.test")
    result = await check_dmarc(resolver, headers, spf, (), sample=lambda: draw)
    assert (result.result, result.pct, result.disposition) == ("fail", 50, disposition)


async def test_several_author_domains_are_a_permerror() -> None:
    from trio_smtp.verify._dmarc import check_dmarc

    headers = [(b"From", b" a@example.test, b@other.test\r\n")]
    result = await check_dmarc(zone(), headers, None, ())
    assert result.result == "permerror"
