"""RelaySink streams the body from the spool, and stuffs dots across piece boundaries."""

from __future__ import annotations

import hashlib
import re
import smtplib
import socket
import threading
import tracemalloc
from pathlib import Path

import trio
from hypothesis import given
from hypothesis import strategies as st

from trio_smtp import Server
from trio_smtp._mail import Mail, Recipient
from trio_smtp._session import Session
from trio_smtp._spool import READ_SIZE, Body, Spool
from trio_smtp.sinks import MemorySink, RelaySink
from trio_smtp.sinks._data_stream import DataEncoder, encode_data

# --- the encoder ---------------------------------------------------------------------------


def _reference(body: bytes) -> bytes:
    """What RelaySink sent before it streamed: the whole body fixed and stuffed at once."""
    fixed = re.sub(rb"\r(?!\n)|(?<!\r)\n", b"\r\n", body)
    if not fixed.endswith(b"\r\n"):
        fixed += b"\r\n"
    return re.sub(rb"(?:^|(?<=\r\n))\.", b"..", fixed) + b".\r\n"


def _in_pieces(body: bytes, cuts: list[int]) -> bytes:
    encoder = DataEncoder()
    out = b""
    start = 0
    for cut in sorted(cuts):
        out += encoder.feed(body[start:cut])
        start = cut
    return out + encoder.feed(body[start:]) + encoder.end()


_BODIES = (
    st.binary(max_size=60)
    .map(
        # Mostly the bytes that matter: CR, LF and dots, with some text between.
        lambda raw: bytes(b"\r\n.a"[b % 4] for b in raw)
    )
    .filter(bool)
)


@given(_BODIES, st.lists(st.integers(min_value=0, max_value=60), max_size=8))
def test_the_body_in_any_pieces_goes_out_as_it_would_whole(body: bytes, cuts: list[int]) -> None:
    assert _in_pieces(body, [min(c, len(body)) for c in cuts]) == _reference(body)


@given(_BODIES)
def test_what_goes_out_has_crlf_only_and_one_end_of_data(body: bytes) -> None:
    sent = encode_data(body)
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", sent) is None
    lines = sent.split(b"\r\n")
    assert lines[-2:] == [b".", b""]
    assert all(not ln.startswith(b".") or ln.startswith(b"..") for ln in lines[:-2])


def test_a_dot_line_at_a_piece_boundary_is_stuffed() -> None:
    cases = [
        ([b"a\r\n", b".b\r\n"], b"a\r\n..b\r\n.\r\n"),  # CRLF | dot
        ([b"a\r", b"\n.b\r\n"], b"a\r\n..b\r\n.\r\n"),  # CR | LF dot
        ([b"a\r", b".b"], b"a\r\n..b\r\n.\r\n"),  # a lone CR, then a dot
        ([b"a\n", b".\r", b"\n"], b"a\r\n..\r\n.\r\n"),  # a lone LF, a dot line
        ([b".", b"\r", b"", b"\r"], b"..\r\n\r\n.\r\n"),  # CRs held over an empty piece
        ([b"a", b".", b"b"], b"a.b\r\n.\r\n"),  # a dot inside a line stays one dot
    ]
    for pieces, expected in cases:
        encoder = DataEncoder()
        assert b"".join(encoder.feed(p) for p in pieces) + encoder.end() == expected, pieces


# --- the sink ------------------------------------------------------------------------------


async def _spooled(content: bytes, spool: Spool) -> Body:
    body = spool.body()
    for i in range(0, len(content), 65536):
        await body.append(content[i : i + 65536])
    await body.finish()
    return body


def _mail(body: Body) -> Mail:
    session = Session(
        id="S1", peer=("192.0.2.7", 40000), hostname="mx.example.org", helo_name="c.example"
    )
    return Mail(
        id="S1.1",
        session=session,
        mail_from="a@example.com",
        recipients=[Recipient(address="b@example.org")],
        body=body,
    )


def _edgy_content(size: int) -> bytes:
    """A message with dot lines, lone CRs and LFs on the boundaries the sink reads at."""
    content = bytearray(b"From: a@example.com\r\nSubject: big\r\n\r\n")
    i = 0
    while len(content) < size:
        content += b"line %08d " % i + b"y" * 50 + b"\r\n"
        i += 1
    for k, edge in enumerate((b"\r\n.", b"\r.", b"\n.", b"\r\n..\r\n")):
        at = (k + 1) * READ_SIZE - 2
        content[at : at + len(edge)] = edge
    return bytes(content)


class _Upstream:
    """An SMTP server in a thread that keeps only a digest of the DATA bytes from ``From:``."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.digest = hashlib.sha256()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as f:
            conn.settimeout(30)
            conn.sendall(b"220 up.test ESMTP\r\n")
            while line := f.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-up.test\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go\r\n")
                    ours = True  # our Received header comes first
                    while (data := f.readline()) != b".\r\n":
                        ours = ours and data != b"From: a@example.com\r\n"
                        if not ours:
                            self.digest.update(data)
                    conn.sendall(b"250 2.0.0 queued\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 2.0.0 ok\r\n")

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=30)


async def test_a_spooled_body_is_relayed_in_pieces_without_loading_it(tmp_path: Path) -> None:
    content = _edgy_content(8 << 20)
    spool = Spool(spool_dir=tmp_path, spool_memory=64 << 10)
    mail = _mail(await _spooled(content, spool))
    upstream = _Upstream()
    tracemalloc.start()
    try:
        await RelaySink("127.0.0.1", upstream.port, starttls="never").deliver(mail)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        upstream.close()
    # The whole body (8 MiB) was never in memory, let alone its fixed and stuffed copies.
    assert peak < 3 << 20, peak
    assert mail._content is None
    # The upstream got the body exactly as fixing and stuffing it whole would give.
    expected = encode_data(content)[: -len(b".\r\n")]
    assert upstream.digest.hexdigest() == hashlib.sha256(expected).hexdigest()


class _Quiet:
    def __getattr__(self, _name: str) -> object:
        return lambda _message: None


async def test_a_body_past_spool_memory_is_relayed_byte_identical_between_two_servers(
    tmp_path: Path,
) -> None:
    # CRLF only (the front server would fix a lone CR or LF on the way in), dot lines on
    # the boundaries where the relay reads the spool.
    content = re.sub(rb"\r(?!\n)|(?<!\r)\n", b"\r\n", _edgy_content(3 << 20))
    stored = MemorySink()
    downstream = Server(
        {"config": {"port": 0, "hostname": "down.test"}}, {"sink": stored, "logger": _Quiet()}
    )
    async with trio.open_nursery() as nursery:
        (_, down_port), *_ = await nursery.start(downstream.serve)
        front = Server(
            {
                "config": {
                    "port": 0,
                    "hostname": "front.test",
                    "relay_from": ["127.0.0.0/8"],
                    "spool_dir": str(tmp_path),
                    "spool_memory": 64 << 10,
                }
            },
            {
                "sink": RelaySink("127.0.0.1", down_port, starttls="never", timeout=30),
                "logger": _Quiet(),
            },
        )
        (_, front_port), *_ = await nursery.start(front.serve)

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", front_port, timeout=30) as client:
                client.sendmail("a@example.com", ["b@example.org"], content)

        await trio.to_thread.run_sync(send)
        [mail] = stored.messages
        relayed = mail.content
        assert relayed.startswith(b"Received: from ")
        assert b"by front.test" in relayed[:500]
        assert relayed[relayed.index(b"From: a@example.com\r\n") :] == content
        front.shutdown()
        downstream.shutdown()
