"""Failure injection: make a test server answer the way a failing one would.

Theory of operation: the test server wraps the hooks of the events a fault can target
(``connect``, the hellos, ``MAIL``, ``RCPT``, ``DATA``, ``BDAT``, ``done`` and every event
the test hooked itself). Each wrapper first asks the :class:`Faults` plan whether this
occurrence is to fail or be delayed, then calls the test's own hook (or, for ``done``
without one, delivers to the sink). A wrapper keeps the kind of the hook it wraps: a
plain hook stays plain (and its delay is ``time.sleep``, run wherever the server runs
plain hooks), an async one stays async. The plan is guarded by a lock, so a threaded
server's test thread may change it while the server runs.

Every occurrence of a wrapped event, and what the plan did to it, is appended to
:attr:`Faults.log` in order: a test can assert on its client's retries.
"""

from __future__ import annotations

import inspect
import os
import random
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs
import trio

from ..engine import Reply

#: Events a fault may target: those whose hook answers the client.
EVENTS: Final = frozenset(
    {"connect", "HELO", "EHLO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "done"}
    | {"RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP", "AUTH"}
)
#: Events wrapped even when the test did not hook them (a hook returning ``None`` is the
#: default reply, so the wrapper changes nothing else). AUTH, VRFY, EXPN and HELP are
#: not: a hook on them changes what the server offers or answers.
ALWAYS_WRAPPED: Final = frozenset(
    {"connect", "HELO", "EHLO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "done", "RSET", "NOOP"}
)
_ALIASES: Final = {"MAIL FROM": "MAIL", "RCPT TO": "RCPT"}
#: How many entries :attr:`Faults.log` keeps (the latest): a long test stays bounded.
MAX_LOG: Final = 10_000
#: The reply of :meth:`Faults.tempfail_rate` unless told otherwise.
TEMPFAIL_TEXT: Final = "4.3.0 injected temporary failure, try again later"


def event_name(event: str) -> str:
    """The canonical name of a fault's event (``"rcpt to"`` is ``"RCPT"``)."""
    name = _ALIASES.get(event.upper(), event.upper())
    if name in ("CONNECT", "DONE"):
        name = name.lower()
    if name not in EVENTS:
        raise ValueError(
            f"cannot inject a failure on event {event!r}; choose from {sorted(EVENTS)}"
        )
    return name


@attrs.define(kw_only=True)
class _Rule:
    event: str
    times: int
    match: str | None
    reply: Reply | None = None
    drop: bool = False
    seconds: float = 0.0

    @property
    def answers(self) -> bool:
        return self.reply is not None or self.drop

    def matches(self, addresses: tuple[str, ...]) -> bool:
        if self.match is None:
            return True
        want = self.match.lower()
        if want.startswith("@"):
            return any(a.lower().endswith(want) for a in addresses)
        return any(a.lower() == want for a in addresses)


class Faults:
    """The failures a test server is told to inject, and the log of what happened."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._rate: tuple[float, random.Random, Reply] | None = None
        #: What happened to each wrapped event, in order: ``"RCPT ann@example.com -> 451
        #: 4.3.0 ..."`` for an injected failure, ``"RCPT ann@example.com"`` otherwise
        #: (the latest :data:`MAX_LOG`).
        self.log: deque[str] = deque(maxlen=MAX_LOG)

    def fail(
        self, event: str, code: int, text: str = "", *, times: int = 1, match: str | None = None
    ) -> None:
        """Answer the next ``times`` occurrences of ``event`` with ``code`` and ``text``.

        Args:
            event: ``"connect"``, ``"EHLO"``, ``"MAIL"``, ``"RCPT"``, ``"DATA"``, ``"done"``, ...
            code: The reply code (4xx or 5xx).
            text: The reply text; without an enhanced code the server adds its class's.
            times: How many occurrences fail.
            match: Only occurrences for this address (``MAIL``/``RCPT``: the address;
                ``done``: the sender or any recipient); ``"@example.com"`` matches a domain.
        """
        if not 400 <= code <= 599:
            raise ValueError(f"an injected failure needs a 4xx or 5xx code, not {code!r}")
        self._add(_Rule(event=event_name(event), times=times, match=match, reply=Reply(code, text)))

    def delay(
        self, event: str, seconds: float, *, times: int = 1, match: str | None = None
    ) -> None:
        """Stall ``seconds`` before answering the next ``times`` occurrences of ``event``.

        The stall counts against ``hook_timeout``, as a slow hook would.
        """
        if seconds < 0:
            raise ValueError(f"a delay cannot be negative: {seconds!r}")
        self._add(_Rule(event=event_name(event), times=times, match=match, seconds=seconds))

    def drop(self, event: str, *, times: int = 1, match: str | None = None) -> None:
        """Close the next ``times`` connections that reach ``event``, without a reply.

        What a crashed server or a cut network looks like to the client: the server's
        socket for that connection is shut down (FIN) where the hook would answer, so
        the client reads end-of-file instead of a reply, and a dropped ``done`` stores
        nothing. (Found through ``/proc/self/fd`` or ``/dev/fd``: Linux, BSD, macOS.)
        """
        self._add(_Rule(event=event_name(event), times=times, match=match, drop=True))

    def tempfail_rate(
        self, p: float, *, seed: int = 0, code: int = 451, text: str = TEMPFAIL_TEXT
    ) -> None:
        """Refuse a seeded fraction ``p`` of transactions at MAIL with a temporary failure.

        The same ``seed`` fails the same transactions in every run. ``p=0`` turns it off.
        """
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"tempfail_rate needs a probability between 0 and 1, not {p!r}")
        if not 400 <= code <= 499:
            raise ValueError(f"tempfail_rate needs a 4xx code, not {code!r}")
        self._check_enabled()
        with self._lock:
            self._rate = (p, random.Random(seed), Reply(code, text)) if p else None

    def clear(self) -> None:
        """Forget every pending failure, delay and rate (the log stays)."""
        with self._lock:
            self._rules.clear()
            self._rate = None

    def _check_enabled(self) -> None:
        if not self.enabled:
            raise RuntimeError("this test server was started with faults=False")

    def _add(self, rule: _Rule) -> None:
        self._check_enabled()
        if rule.times < 1:
            raise ValueError(f"times must be at least 1, not {rule.times!r}")
        with self._lock:
            self._rules.append(rule)

    def _take(
        self, event: str, label: str, addresses: tuple[str, ...]
    ) -> tuple[float, Reply | None, bool]:
        """What to do to this occurrence: a delay, and a reply or a drop. Logs it."""
        seconds = 0.0
        reply: Reply | None = None
        drop = False
        with self._lock:
            for rule in list(self._rules):
                if rule.event != event or not rule.matches(addresses):
                    continue
                if rule.answers and (reply is not None or drop):
                    continue  # one failure per occurrence; the next rule waits its turn
                rule.times -= 1
                if rule.times == 0:
                    self._rules.remove(rule)
                if rule.reply is not None:
                    reply = rule.reply
                elif rule.drop:
                    drop = True
                else:
                    seconds += rule.seconds
            if reply is None and not drop and event == "MAIL" and self._rate is not None:
                p, rng, rate_reply = self._rate
                if rng.random() < p:
                    reply = rate_reply
            entry = label
            if seconds:
                entry += f" -> delayed {seconds:g} s"
            if reply is not None:
                entry += f" -> {reply.code} {reply.text}".rstrip()
            if drop:
                entry += " -> dropped"
            self.log.append(entry)
        return seconds, reply, drop

    # ------------------------------------------------------------------ wrapping hooks

    def wrap(self, events: Mapping[str, Any], sink: Any) -> dict[str, Any]:
        """``events`` with every fault-capable event wrapped (``done`` delivers to ``sink``)."""
        wrapped: dict[str, Any] = {}
        for name, hook in events.items():
            canonical = _ALIASES.get(name, name)
            if canonical in wrapped:
                raise ValueError(f"event {canonical!r} is given twice (as {name!r})")
            wrapped[canonical] = hook
        for name in EVENTS:
            hook = wrapped.get(name)
            if hook is None and name not in ALWAYS_WRAPPED:
                continue
            if hook is None and name == "done":
                hook = sink.deliver
            wrapped[name] = self._wrapper(name, hook)
        return wrapped

    def _wrapper(self, name: str, hook: Callable[..., Any] | None) -> Callable[..., Any]:
        take = self._take

        def before(arg: Any) -> tuple[float, Reply | None, bool]:
            label, addresses = _describe(name, arg)
            return take(name, label, addresses)

        if hook is not None and not _is_async(hook):

            def plain(arg: Any) -> Any:
                seconds, reply, drop = before(arg)
                if seconds:
                    time.sleep(seconds)
                if reply is not None:
                    raise reply
                if drop:
                    _shut_down(_session_of(name, arg))
                    return None
                return hook(arg)

            return plain

        async def awaitable(arg: Any) -> Any:
            seconds, reply, drop = before(arg)
            if seconds:
                await trio.sleep(seconds)
            if reply is not None:
                raise reply
            if drop:
                _shut_down(_session_of(name, arg))
                return None
            if hook is None:
                return None
            result = hook(arg)
            return await result if inspect.isawaitable(result) else result

        return awaitable


def _is_async(hook: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(
        getattr(hook, "__call__", None)  # noqa: B004
    )


def _describe(name: str, arg: Any) -> tuple[str, tuple[str, ...]]:
    """A log label for this occurrence, and the addresses a ``match`` looks at."""
    if name == "connect":
        peer = getattr(arg, "peer", None)
        return f"connect {peer[0] if peer else '?'}", ()
    if name == "done":
        addresses = (arg.mail_from, *arg.rcpt_tos)
        return f"done {arg.mail_from} to {','.join(arg.rcpt_tos)}", tuple(addresses)
    address = getattr(arg, "address", None)
    if address is not None:
        return f"{name} {address}", (address,)
    argument = getattr(arg, "argument", "") or ""
    return f"{name} {argument}".rstrip(), ()


def _session_of(name: str, arg: Any) -> Any:
    if name == "connect":
        return arg
    return arg.session


def _shut_down(session: Any) -> None:
    """Shut down the server's socket of this session: the client reads end-of-file.

    The socket is found by its two addresses among this process's file descriptors and
    shut down through a duplicate, so the server's own socket object is never touched:
    its next read sees end-of-file and its next write fails, as after a network cut.
    """
    local, peer = session.local, session.peer
    for directory in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(directory):
            break
    else:  # pragma: no cover - every platform we test on has one
        raise RuntimeError("drop() needs /proc/self/fd or /dev/fd to find the connection")
    for name in os.listdir(directory):
        try:
            fd = int(name)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except (ValueError, OSError):
            continue
        with sock:
            try:
                if sock.getsockname()[:2] == local[:2] and sock.getpeername()[:2] == peer[:2]:
                    sock.shutdown(socket.SHUT_RDWR)
                    return
            except OSError:
                continue
    raise RuntimeError(f"drop(): no socket from {peer!r} to {local!r} in this process")
