"""A small driver for the sans-IO engine, shared by the engine tests.

:class:`Driver` owns one :class:`Engine`: it feeds bytes, pulls every event until the
engine wants more input, answers each event that needs a reply (with the default reply,
or with what a scripted ``answer`` function returns), and keeps the events and the
bytes the engine wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from trio_smtp.engine import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Engine,
    EngineConfig,
    Event,
    MessageData,
    Reply,
    State,
)

#: What a scripted answer returns: ``None`` for the event's default reply.
Answer = Reply | Sequence[Reply] | None
Answerer = Callable[[Event], Answer]
E = TypeVar("E", bound=Event)


def default_answer(_event: Event) -> Answer:
    """Answer every event with its default reply."""
    return None


class Driver:
    """Drives one engine session the way a server task would.

    Args:
        config: The engine's configuration (the defaults when ``None``).
        answer: Called with each event that needs a reply; returns the reply to give.
        greet: Send the default greeting right away (not possible in PROXY mode).
        tls_active: Start as an implicit-TLS connection.
    """

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        answer: Answerer = default_answer,
        greet: bool = True,
        tls_active: bool = False,
    ) -> None:
        self.engine = Engine(config, tls_active=tls_active)
        self.answer = answer
        #: Every event seen so far, in order.
        self.events: list[Event] = []
        #: Every byte the engine has written so far.
        self.output = b""
        #: What the last pump stopped on: NEED_DATA, PAUSED or a ConnectionClosed.
        self.stopped_on: object = None
        if greet:
            self.engine.greet()
            self.output += self.engine.data_to_send()

    @property
    def closed(self) -> ConnectionClosed | None:
        """The ConnectionClosed event, once the session is over."""
        for event in self.events:
            if isinstance(event, ConnectionClosed):
                return event
        return None

    def state(self) -> State:
        """The engine's state now (a call, so type checkers do not narrow it)."""
        return self.engine.state

    def pump(self) -> list[Event]:
        """Pull events until the engine needs data, pauses or closes; return them."""
        new: list[Event] = []
        if self.closed is not None:
            return new
        while True:
            event = self.engine.next_event()
            if event is NEED_DATA or event is PAUSED:
                self.stopped_on = event
                break
            assert isinstance(event, Event)
            new.append(event)
            if event.needs_reply:
                self.engine.respond(self.answer(event))
            if isinstance(event, ConnectionClosed):
                self.stopped_on = event
                break
        self.events.extend(new)
        self.output += self.engine.data_to_send()
        return new

    def feed(self, data: bytes) -> list[Event]:
        """Receive ``data`` (``b""`` for end of file), pump, and return the new events."""
        self.engine.receive_data(data)
        return self.pump()

    def eof(self) -> list[Event]:
        """Report end of file and pump."""
        return self.feed(b"")

    def send(self, data: bytes) -> bytes:
        """Receive ``data``, pump, and return only the bytes written in answer."""
        before = len(self.output)
        self.feed(data)
        return self.output[before:]

    def feed_chunks(self, chunks: Iterable[bytes]) -> list[Event]:
        """Feed each non-empty chunk in turn, pumping after each; return all new events."""
        new: list[Event] = []
        for chunk in chunks:
            if chunk:
                new.extend(self.feed(chunk))
        return new

    def of_type(self, kind: type[E]) -> list[E]:
        """The events seen so far of type ``kind``."""
        return [e for e in self.events if isinstance(e, kind)]

    def content(self) -> bytes:
        """All MessageData seen so far, joined."""
        return b"".join(e.data for e in self.events if isinstance(e, MessageData))

    def replies(self) -> list[bytes]:
        """The output split into lines (with CRLF kept)."""
        return self.output.splitlines(keepends=True)


def merge_message_data(events: Iterable[Event]) -> list[Event | bytes]:
    """Events with consecutive MessageData merged into their bytes.

    How a body is cut into MessageData pieces depends on how the input was cut, so
    comparisons across different feedings look at the joined content instead.
    """
    out: list[Event | bytes] = []
    for event in events:
        if isinstance(event, MessageData):
            if out and isinstance(out[-1], bytes):
                out[-1] += event.data
            else:
                out.append(event.data)
        else:
            out.append(event)
    return out


def session(
    data: bytes | Iterable[bytes],
    config: EngineConfig | None = None,
    *,
    answer: Answerer = default_answer,
    tls_active: bool = False,
) -> Driver:
    """A greeted session fed ``data`` (one chunk, or several)."""
    driver = Driver(config, answer=answer, tls_active=tls_active)
    if isinstance(data, bytes):
        driver.feed(data)
    else:
        driver.feed_chunks(data)
    return driver


def byte_by_byte(data: bytes) -> list[bytes]:
    """``data`` cut into one-byte chunks."""
    return [data[i : i + 1] for i in range(len(data))]


GREETING = b"220 localhost ESMTP trio_smtp\r\n"
EHLO_REPLY = (
    b"250-localhost\r\n"
    b"250-PIPELINING\r\n"
    b"250-SIZE 33554432\r\n"
    b"250-8BITMIME\r\n"
    b"250-SMTPUTF8\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250-CHUNKING\r\n"
    b"250-BINARYMIME\r\n"
    b"250 DSN\r\n"
)
