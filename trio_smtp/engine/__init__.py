"""The sans-IO SMTP/LMTP engine: no Trio, no sockets, no clocks.

Feed it bytes, read events, answer them, send what it gives back::

    from trio_smtp.engine import Engine, EngineConfig, NEED_DATA

    engine = Engine(EngineConfig(hostname="mx.example.com"))
    engine.greet()
    engine.receive_data(b"EHLO client.example.org\\r\\n")
    event = engine.next_event()          # Helo(name="client.example.org", ...)
    engine.respond()                     # the default 250 reply with the extensions
    assert engine.next_event() is NEED_DATA
    wire = engine.data_to_send()         # b"220 mx.example.com ESMTP ...\\r\\n250-..."
"""

from __future__ import annotations

from ._config import DEFAULT_MAX_AUTH_FAILURES as DEFAULT_MAX_AUTH_FAILURES
from ._config import DEFAULT_MAX_BAD_COMMANDS as DEFAULT_MAX_BAD_COMMANDS
from ._config import DEFAULT_MAX_COMMAND_LINE as DEFAULT_MAX_COMMAND_LINE
from ._config import DEFAULT_MAX_DATA_LINE as DEFAULT_MAX_DATA_LINE
from ._config import DEFAULT_MAX_MESSAGE_SIZE as DEFAULT_MAX_MESSAGE_SIZE
from ._config import DEFAULT_MAX_RECIPIENTS as DEFAULT_MAX_RECIPIENTS
from ._config import EngineConfig as EngineConfig
from ._connection import Engine as Engine
from ._data import BareLineEndings as BareLineEndings
from ._errors import LocalProtocolError as LocalProtocolError
from ._errors import ProtocolError as ProtocolError
from ._errors import RemoteProtocolError as RemoteProtocolError
from ._events import NEED_DATA as NEED_DATA
from ._events import PAUSED as PAUSED
from ._events import AuthCredentials as AuthCredentials
from ._events import Bdat as Bdat
from ._events import Command as Command
from ._events import CommandRejected as CommandRejected
from ._events import ConnectionClosed as ConnectionClosed
from ._events import Data as Data
from ._events import EndOfMessage as EndOfMessage
from ._events import Event as Event
from ._events import Expn as Expn
from ._events import Helo as Helo
from ._events import Help as Help
from ._events import MailFrom as MailFrom
from ._events import MessageData as MessageData
from ._events import MessageRejected as MessageRejected
from ._events import Noop as Noop
from ._events import ProxyHeader as ProxyHeader
from ._events import Quit as Quit
from ._events import RcptTo as RcptTo
from ._events import Rset as Rset
from ._events import Sentinel as Sentinel
from ._events import StartTLS as StartTLS
from ._events import TLSUpgrade as TLSUpgrade
from ._events import Vrfy as Vrfy
from ._events import Xclient as Xclient
from ._replies import REPLY_CODES as REPLY_CODES
from ._replies import Reply as Reply
from ._state import Phase as Phase
from ._state import SessionState as SessionState
from ._state import State as State

__all__ = [
    "DEFAULT_MAX_AUTH_FAILURES",
    "DEFAULT_MAX_BAD_COMMANDS",
    "DEFAULT_MAX_COMMAND_LINE",
    "DEFAULT_MAX_DATA_LINE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_RECIPIENTS",
    "NEED_DATA",
    "PAUSED",
    "REPLY_CODES",
    "AuthCredentials",
    "BareLineEndings",
    "Bdat",
    "Command",
    "CommandRejected",
    "ConnectionClosed",
    "Data",
    "EndOfMessage",
    "Engine",
    "EngineConfig",
    "Event",
    "Expn",
    "Helo",
    "Help",
    "LocalProtocolError",
    "MailFrom",
    "MessageData",
    "MessageRejected",
    "Noop",
    "Phase",
    "ProtocolError",
    "ProxyHeader",
    "Quit",
    "RcptTo",
    "RemoteProtocolError",
    "Reply",
    "Rset",
    "Sentinel",
    "SessionState",
    "StartTLS",
    "State",
    "TLSUpgrade",
    "Vrfy",
    "Xclient",
]
