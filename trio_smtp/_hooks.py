"""The bridge to the application: calling hooks and turning their answers into replies.

Theory of operation: async hooks run on the event loop; plain functions run in a
worker thread (``trio.to_thread.run_sync`` under a :class:`trio.CapacityLimiter` of
their own, as Starlette runs sync endpoints), so a hook that blocks stalls only its
own connection. Both are bounded by ``hook_timeout``: past it the client gets
451 4.3.0, and a thread still running is abandoned (``abandon_on_cancel=True``), not
waited for. A plain function that returns an awaitable (``lambda m: store(m)``) has
that awaited on the loop, under the same deadline.

Whatever a hook raises — ``SystemExit`` and ``KeyboardInterrupt`` included, never
``trio.Cancelled`` — is a hook failure: 451 4.3.0 and the ``error`` event; only a
real signal stops the server. A :class:`Reply` a hook raises is its answer; its
traceback is cleared before it is used, because a module-level reply (``raise
SPAM``) would otherwise keep every frame it was ever raised from, and with them
every message the hook saw.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import trio

from ._logger import emit
from ._metrics import Metrics
from ._replies import (
    AUTH_INVALID,
    AUTH_SUCCEEDED,
    CONNECT_FAILED,
    CONNECT_REFUSED,
    HOOK_FAILED,
    HOOK_REFUSED,
    QUEUED_AS,
)
from .engine import Bdat, Command, MailFrom, RcptTo, Reply

if TYPE_CHECKING:
    from ._logger import LoggerLike
    from ._schema import Context
    from ._settings import Authenticator
    from .engine import AuthCredentials

#: Builds a hook's context: ``(event name, mail, **fields) -> Context``.
ContextFactory = Callable[..., "Context"]

Hook = Callable[..., Any]

#: Threads that plain-function hooks may occupy at once, across all connections.
SYNC_HOOK_THREADS: Final = 40
#: What a hook may raise that counts as its failure (never ``trio.Cancelled``).
HOOK_ERRORS: Final = (Exception, SystemExit, KeyboardInterrupt)


class HookTimeout(Exception):
    """A hook took longer than ``hook_timeout``.

    Attributes:
        event: The hook's event name (``"RCPT"``, ``"done"`` …).
        seconds: The limit it overran.
    """

    def __init__(self, event: str, seconds: float) -> None:
        super().__init__(f"hook {event!r} did not finish within {seconds:g} s")
        self.event = event
        self.seconds = seconds


class HookReturnError(TypeError):
    """A hook returned something that is not a reply.

    Attributes:
        event: The hook's event name.
    """

    def __init__(self, message: str, *, event: str = "") -> None:
        super().__init__(message)
        self.event = event


class _Failed:
    """The result of a hook that failed (already reported through ``error``)."""

    def __repr__(self) -> str:
        return "FAILED"


#: What :meth:`HookRunner.call` returns for a hook that raised or overran.
FAILED: Final = _Failed()


def is_async(hook: Hook) -> bool:
    """Whether calling ``hook`` gives a coroutine (runs on the loop, not in a thread)."""
    try:
        return _is_async(hook)
    except TypeError:  # an unhashable callable
        return _is_async.__wrapped__(hook)


@functools.lru_cache(maxsize=1024)
def _is_async(hook: Hook) -> bool:
    if inspect.iscoroutinefunction(hook):
        return True
    call = getattr(hook, "__call__", None)  # noqa: B004 -- instances with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def clean_reply(reply: Reply) -> Reply:
    """A raised reply, without what raising it attached (frames, chained errors)."""
    reply.__traceback__ = None
    reply.__context__ = None
    reply.__cause__ = None
    return reply


def _boxed(hook: Hook, args: tuple[Any, ...]) -> tuple[Any]:
    return (hook(*args),)


class HookRunner:
    """Calls one connection's hooks.

    Args:
        hooks: The hooks by canonical event name.
        timeout: ``hook_timeout``, in seconds.
        threads: The limiter for plain-function hooks, shared by all connections.
        logger: Where failures are logged.
        label: The session id, for log lines.
        context: Builds the context a command hook gets.
    """

    # Slots: one of these per connection (issue 11: memory per idle connection).
    __slots__ = ("_context", "_label", "_logger", "_metrics", "_threads", "hooks", "timeout")

    def __init__(
        self,
        hooks: Mapping[str, Hook],
        *,
        timeout: float,
        threads: trio.CapacityLimiter,
        logger: LoggerLike,
        label: str,
        context: ContextFactory,
        metrics: Metrics | None = None,
    ) -> None:
        self.hooks = hooks
        self.timeout = timeout
        self._context = context
        self._threads = threads
        self._logger = logger
        self._label = label
        self._metrics = metrics if metrics is not None else Metrics(enabled=False)

    def __repr__(self) -> str:
        return f"<HookRunner {self._label} {sorted(self.hooks)}>"

    async def _invoke(self, hook: Hook, args: tuple[Any, ...]) -> Any:
        if is_async(hook):
            return await hook(*args)
        # Boxed: trio refuses a thread function that returns a coroutine.
        (result,) = await trio.to_thread.run_sync(
            functools.partial(_boxed, hook, args),
            limiter=self._threads,
            abandon_on_cancel=True,
        )
        if inspect.isawaitable(result):
            result = await result
        return result

    async def call(
        self, name: str, hook: Hook, *args: Any, mail: Any = None, deadline: float | None = None
    ) -> Any:
        """Call ``hook`` under ``hook_timeout`` (and ``deadline``, if sooner).

        Returns:
            What it returned, the :class:`Reply` it raised, or :data:`FAILED` when it
            raised anything else or overran (then ``error(exc, mail)`` has fired).
        """
        limit = trio.current_time() + self.timeout
        if deadline is not None and deadline < limit:
            limit = deadline
        timed = self._metrics.enabled
        started = trio.current_time() if timed else 0.0
        try:
            # A bare scope rather than fail_at: the same deadline without the two
            # generator-based context managers around it, on every message's path.
            with trio.CancelScope(deadline=limit):
                if is_async(hook):  # _invoke's first case, inline: every message's path
                    return await hook(*args)
                return await self._invoke(hook, args)
        except Reply as reply:
            return clean_reply(reply)
        except HOOK_ERRORS as exc:
            await self.failed(exc, mail, hook=name)
            return FAILED
        finally:
            if timed:
                self._metrics.hook_duration(name, trio.current_time() - started)
        # Only a scope that caught its own cancellation gets here: the deadline passed.
        await self.failed(HookTimeout(name, self.timeout), mail)
        return FAILED

    async def failed(self, error: BaseException, mail: Any = None, *, hook: str = "") -> None:
        """Log a hook failure and fire the ``error`` hook (``error(error, mail)``).

        Every failure is logged at ERROR with the hook's name: one that raised with its
        traceback, one that overran with how long it was given, one that returned
        something that is not a reply with what it returned.
        """
        self._log_failure(hook or getattr(error, "event", "") or "hook", error)
        await self.fire("error", error, mail)

    def _log_failure(self, hook: str, error: BaseException) -> None:
        emit(
            self._logger,
            "error",
            f"Hook {hook!r} failed: id={self._label} {error!r}",
            # A timeout or a wrong answer has no traceback worth printing.
            exc=error if error.__traceback__ is not None else None,
            hook=hook,
        )

    async def fire(self, name: str, *args: Any, deadline: float | None = None) -> None:
        """Run a lifecycle hook whose result does not matter (``error``, ``close``)."""
        hook = self.hooks.get(name)
        if hook is None:
            return
        started = trio.current_time()
        limit = started + self.timeout
        if deadline is not None and deadline < limit:
            limit = deadline
        with trio.CancelScope(deadline=limit) as scope:
            try:
                await self._invoke(hook, args)
            except HOOK_ERRORS as exc:
                self._log_failure(name, exc)
        if scope.cancelled_caught:
            self._log_failure(name, HookTimeout(name, limit - started))

    async def as_reply(self, name: str, result: Any, mail: Any = None) -> Reply | None:
        """A command hook's answer as a reply; ``None`` means the default one."""
        if result is None or result is True:
            return None
        if isinstance(result, Reply):
            return result
        if result is False:
            return HOOK_REFUSED
        if result is FAILED:
            return HOOK_FAILED
        await self.failed(
            HookReturnError(f"hook {name!r} returned {result!r}, not a Reply", event=name), mail
        )
        return HOOK_FAILED

    async def connect_reply(self, session: Any) -> Reply | None:
        """The ``connect`` hook's answer: ``None`` greets, a reply refuses."""
        hook = self.hooks.get("connect")
        if hook is None:
            return None
        result = await self.call("connect", hook, session)
        if result is FAILED:
            return CONNECT_FAILED
        if result is None or result is True:
            return None
        if result is False:
            return CONNECT_REFUSED
        if isinstance(result, Reply):
            return None if result.code != 220 and result.is_positive else result
        await self.failed(
            HookReturnError(f"hook 'connect' returned {result!r}, not a Reply", event="connect")
        )
        return CONNECT_FAILED

    async def command_reply(self, name: str, event: Command | None, mail: Any) -> Reply | None:
        """Run the hook for command ``name`` (if any): ``None`` means the default reply.

        The context is built only when there is a hook: commands without one (the
        common case) cost nothing here.
        """
        hook = self.hooks.get(name)
        if hook is None:
            return None
        fields: dict[str, Any] = {}
        if event is not None:
            fields["argument"] = event.argument
            if isinstance(event, MailFrom | RcptTo):
                fields.update(address=event.address, params=event.params)
            elif isinstance(event, Bdat):
                fields.update(size=event.size, last=event.last)
        result = await self.call(name, hook, self._context(name, mail, **fields), mail=mail)
        return await self.as_reply(name, result, mail)

    async def chunk_reply(self, mail: Any, chunk: bytes, size: int) -> Reply | None:
        """The ``DATA_CHUNK`` hook's answer to a piece of the body (``None``: go on)."""
        hook = self.hooks.get("DATA_CHUNK")
        if hook is None:
            return None
        ctx = self._context("DATA_CHUNK", mail, chunk=chunk, size=size)
        result = await self.call("DATA_CHUNK", hook, ctx, mail=mail)
        return await self.as_reply("DATA_CHUNK", result, mail)

    async def auth_reply(self, event: AuthCredentials, mail: Any) -> Reply | None:
        """The AUTH hook's verdict: ``True``/``False``/a reply decide, ``None`` passes on."""
        hook = self.hooks.get("AUTH")
        if hook is None:
            return None
        ctx = self._context(
            "AUTH",
            mail,
            argument=event.mechanism,
            mechanism=event.mechanism,
            login=event.login,
            password=event.password,
            authzid=event.authzid,
        )
        result = await self.call("AUTH", hook, ctx, mail=mail)
        if result is None:
            return None
        if result is True:
            return AUTH_SUCCEEDED
        if result is False:
            return AUTH_INVALID
        if isinstance(result, Reply):
            return result
        if result is not FAILED:
            await self.failed(HookReturnError(f"hook 'AUTH' returned {result!r}", event="AUTH"))
        return HOOK_FAILED

    async def authenticate(
        self,
        authenticator: Authenticator,
        event: AuthCredentials,
        *,
        limiter: trio.CapacityLimiter | None = None,
    ) -> Reply | None:
        """Check credentials with the authenticator in a worker thread, bounded like a hook.

        ``limiter`` bounds the threads that password checks use (the AUTH guard's own),
        so that slow checks never fill the pool that sinks and hooks need.

        Returns:
            235 when they are valid, ``None`` (the engine's 535) when not, 451 when the
            authenticator failed or overran (a thread that overruns is abandoned).
        """
        try:
            with trio.fail_after(self.timeout):
                ok = await trio.to_thread.run_sync(
                    authenticator,
                    event.mechanism,
                    event.login,
                    event.password,
                    abandon_on_cancel=True,
                    limiter=limiter,
                )
        except trio.TooSlowError:
            await self.failed(HookTimeout("authenticator", self.timeout))
            return HOOK_FAILED
        except HOOK_ERRORS as exc:
            # Like a failing hook: 451 and the error event, not a dropped connection.
            await self.failed(exc, hook="authenticator")
            return HOOK_FAILED
        return AUTH_SUCCEEDED if ok else None

    async def deliver(self, mail: Any, sink: Any, *, lmtp: bool) -> list[Reply]:
        """Hand a complete message to the ``done`` hook (or the sink): its replies."""
        deliver = self.hooks.get("done") or sink.deliver
        result = await self.call("done", deliver, mail, mail=mail)
        if result is None and not lmtp:
            return [QUEUED_AS(mail.id)]
        return await self.message_replies(result, mail, lmtp=lmtp)

    async def message_replies(self, result: Any, mail: Any, *, lmtp: bool) -> list[Reply]:
        """The replies to a message from the ``done`` hook's answer.

        SMTP gets one reply; LMTP one per recipient (RFC 2033 §4.2), from a mapping
        of address to reply, a list in recipient order, or one reply for all.
        """
        if not lmtp:
            reply = await self.as_reply("done", result, mail)
            return [reply or QUEUED_AS(mail.id)]
        recipients = mail.recipients
        n = len(recipients)
        default = [Reply(250, f"2.1.5 <{r.address}> delivered") for r in recipients]
        if isinstance(result, Mapping):
            return [
                await self.as_reply("done", result.get(r.address), mail) or default[i]
                for i, r in enumerate(recipients)
            ]
        if isinstance(result, list | tuple):
            if len(result) != n:
                error = HookReturnError(
                    f"hook 'done' returned {len(result)} replies for {n} recipients", event="done"
                )
                await self.failed(error, mail)
                return [HOOK_FAILED] * n
            return [
                await self.as_reply("done", item, mail) or default[i]
                for i, item in enumerate(result)
            ]
        reply = await self.as_reply("done", result, mail)
        return default if reply is None else [reply] * n
