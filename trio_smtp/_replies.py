"""The replies the Trio layer decides on itself, in one place for every module."""

from __future__ import annotations

from typing import Final

from .engine import Reply
from .engine._replies import ReplyTemplate

#: A hook (or the sink, or the authenticator) failed or overran ``hook_timeout``.
HOOK_FAILED: Final = Reply(451, "4.3.0 local error in processing; try again later")
#: A message taken (by the ``done`` hook or the sink), with its queue id.
QUEUED_AS: Final = ReplyTemplate(250, "2.0.0 OK queued as ")
#: A hook answered ``False``.
HOOK_REFUSED: Final = Reply(550, "5.7.1 rejected")
#: The ``connect`` hook answered ``False``; RFC 5321 §3.1: 554 instead of the greeting.
CONNECT_REFUSED: Final = Reply(554, "5.7.1 connection refused")
#: The ``connect`` hook (or the ``data`` factory, or a bug) failed.
CONNECT_FAILED: Final = Reply(421, "4.3.0 local error in processing; try again later")
#: Graceful shutdown.
SHUTTING_DOWN: Final = Reply(421, "4.3.2 service shutting down, try again later")
#: RFC 5321 §4.5.3.2.7 and §4.5.3.2.6: the waits for a command and for message data.
IDLE_TIMEOUT: Final = Reply(421, "4.4.2 timeout waiting for a command; closing connection")
DATA_TIMEOUT: Final = Reply(421, "4.4.2 timeout waiting for message data; closing connection")
#: Over ``max_connections_per_ip``, and over ``max_connections``.
TOO_MANY_FROM_IP: Final = Reply(421, "4.7.0 too many connections from your address")
BUSY: Final = Reply(421, "4.7.0 too many connections, try again later")
#: RFC 4954 §6: the outcome of AUTH decided by a hook or the authenticator.
AUTH_SUCCEEDED: Final = Reply(235, "2.7.0 authentication successful")
AUTH_INVALID: Final = Reply(535, "5.7.8 authentication credentials invalid")
