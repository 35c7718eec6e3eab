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

from ._config import (
    DEFAULT_MAX_AUTH_FAILURES as DEFAULT_MAX_AUTH_FAILURES,
)
from ._config import (
    DEFAULT_MAX_BAD_COMMANDS as DEFAULT_MAX_BAD_COMMANDS,
)
from ._config import (
    DEFAULT_MAX_COMMAND_LINE as DEFAULT_MAX_COMMAND_LINE,
)
from ._config import (
    DEFAULT_MAX_DATA_LINE as DEFAULT_MAX_DATA_LINE,
)
from ._config import (
    DEFAULT_MAX_MESSAGE_SIZE as DEFAULT_MAX_MESSAGE_SIZE,
)
from ._config import (
    DEFAULT_MAX_RECIPIENTS as DEFAULT_MAX_RECIPIENTS,
)
from ._config import (
    EngineConfig as EngineConfig,
)
from ._connection import NEED_DATA as NEED_DATA
from ._connection import PAUSED as PAUSED
from ._connection import Engine as Engine
from ._connection import Sentinel as Sentinel
from ._data import BareLineEndings as BareLineEndings
from ._errors import (
    LocalProtocolError as LocalProtocolError,
)
from ._errors import (
    ProtocolError as ProtocolError,
)
from ._errors import (
    RemoteProtocolError as RemoteProtocolError,
)
from ._events import (
    AuthCredentials as AuthCredentials,
)
from ._events import (
    Bdat as Bdat,
)
from ._events import (
    Command as Command,
)
from ._events import (
    CommandRejected as CommandRejected,
)
from ._events import (
    ConnectionClosed as ConnectionClosed,
)
from ._events import (
    Data as Data,
)
from ._events import (
    EndOfMessage as EndOfMessage,
)
from ._events import (
    Event as Event,
)
from ._events import (
    Expn as Expn,
)
from ._events import (
    Helo as Helo,
)
from ._events import (
    Help as Help,
)
from ._events import (
    MailFrom as MailFrom,
)
from ._events import (
    MessageData as MessageData,
)
from ._events import (
    MessageRejected as MessageRejected,
)
from ._events import (
    Noop as Noop,
)
from ._events import (
    ProxyHeader as ProxyHeader,
)
from ._events import (
    Quit as Quit,
)
from ._events import (
    RcptTo as RcptTo,
)
from ._events import (
    Rset as Rset,
)
from ._events import (
    StartTLS as StartTLS,
)
from ._events import (
    TLSUpgrade as TLSUpgrade,
)
from ._events import (
    Vrfy as Vrfy,
)
from ._replies import (
    AUTH_CONTINUE as AUTH_CONTINUE,
)
from ._replies import (
    AUTH_INVALID as AUTH_INVALID,
)
from ._replies import (
    AUTH_MECHANISM_TOO_WEAK as AUTH_MECHANISM_TOO_WEAK,
)
from ._replies import (
    AUTH_REQUIRED as AUTH_REQUIRED,
)
from ._replies import (
    AUTH_SUCCEEDED as AUTH_SUCCEEDED,
)
from ._replies import (
    BAD_SEQUENCE as BAD_SEQUENCE,
)
from ._replies import (
    CANNOT_ACCOMMODATE_PARAMETERS as CANNOT_ACCOMMODATE_PARAMETERS,
)
from ._replies import (
    CANNOT_VRFY as CANNOT_VRFY,
)
from ._replies import (
    DOES_NOT_ACCEPT_MAIL as DOES_NOT_ACCEPT_MAIL,
)
from ._replies import (
    DOMAIN_DOES_NOT_ACCEPT_MAIL as DOMAIN_DOES_NOT_ACCEPT_MAIL,
)
from ._replies import (
    ENCRYPTION_REQUIRED as ENCRYPTION_REQUIRED,
)
from ._replies import (
    EXCEEDED_STORAGE as EXCEEDED_STORAGE,
)
from ._replies import (
    HELP_MESSAGE as HELP_MESSAGE,
)
from ._replies import (
    INSUFFICIENT_STORAGE as INSUFFICIENT_STORAGE,
)
from ._replies import (
    LOCAL_ERROR as LOCAL_ERROR,
)
from ._replies import (
    MAILBOX_NAME_NOT_ALLOWED as MAILBOX_NAME_NOT_ALLOWED,
)
from ._replies import (
    MAILBOX_UNAVAILABLE as MAILBOX_UNAVAILABLE,
)
from ._replies import (
    MAILBOX_UNAVAILABLE_TEMPORARY as MAILBOX_UNAVAILABLE_TEMPORARY,
)
from ._replies import (
    NOT_IMPLEMENTED as NOT_IMPLEMENTED,
)
from ._replies import (
    OK as OK,
)
from ._replies import (
    PARAMETER_NOT_IMPLEMENTED as PARAMETER_NOT_IMPLEMENTED,
)
from ._replies import (
    PARAMETERS_NOT_RECOGNIZED as PARAMETERS_NOT_RECOGNIZED,
)
from ._replies import (
    PASSWORD_TRANSITION_NEEDED as PASSWORD_TRANSITION_NEEDED,
)
from ._replies import (
    REJECTED_BY_POLICY as REJECTED_BY_POLICY,
)
from ._replies import REPLY_CODES as REPLY_CODES
from ._replies import (
    SERVICE_CLOSING as SERVICE_CLOSING,
)
from ._replies import (
    SERVICE_READY as SERVICE_READY,
)
from ._replies import (
    SERVICE_UNAVAILABLE as SERVICE_UNAVAILABLE,
)
from ._replies import (
    START_MAIL_INPUT as START_MAIL_INPUT,
)
from ._replies import (
    SYNTAX_ERROR as SYNTAX_ERROR,
)
from ._replies import (
    SYNTAX_ERROR_IN_PARAMETERS as SYNTAX_ERROR_IN_PARAMETERS,
)
from ._replies import (
    SYSTEM_STATUS as SYSTEM_STATUS,
)
from ._replies import (
    TEMPORARY_AUTH_FAILURE as TEMPORARY_AUTH_FAILURE,
)
from ._replies import (
    TRANSACTION_FAILED as TRANSACTION_FAILED,
)
from ._replies import (
    USER_NOT_LOCAL as USER_NOT_LOCAL,
)
from ._replies import (
    USER_NOT_LOCAL_WILL_FORWARD as USER_NOT_LOCAL_WILL_FORWARD,
)
from ._replies import Reply as Reply
from ._state import Phase as Phase
from ._state import SessionState as SessionState
from ._state import State as State

__all__ = [
    "AUTH_CONTINUE",
    "AUTH_INVALID",
    "AUTH_MECHANISM_TOO_WEAK",
    "AUTH_REQUIRED",
    "AUTH_SUCCEEDED",
    "BAD_SEQUENCE",
    "CANNOT_ACCOMMODATE_PARAMETERS",
    "CANNOT_VRFY",
    "DOES_NOT_ACCEPT_MAIL",
    "DOMAIN_DOES_NOT_ACCEPT_MAIL",
    "ENCRYPTION_REQUIRED",
    "EXCEEDED_STORAGE",
    "HELP_MESSAGE",
    "INSUFFICIENT_STORAGE",
    "LOCAL_ERROR",
    "MAILBOX_NAME_NOT_ALLOWED",
    "MAILBOX_UNAVAILABLE",
    "MAILBOX_UNAVAILABLE_TEMPORARY",
    "NEED_DATA",
    "NOT_IMPLEMENTED",
    "OK",
    "PARAMETERS_NOT_RECOGNIZED",
    "PARAMETER_NOT_IMPLEMENTED",
    "PASSWORD_TRANSITION_NEEDED",
    "PAUSED",
    "REJECTED_BY_POLICY",
    "REPLY_CODES",
    "SERVICE_CLOSING",
    "SERVICE_READY",
    "SERVICE_UNAVAILABLE",
    "START_MAIL_INPUT",
    "SYNTAX_ERROR",
    "SYNTAX_ERROR_IN_PARAMETERS",
    "SYSTEM_STATUS",
    "TEMPORARY_AUTH_FAILURE",
    "TRANSACTION_FAILED",
    "USER_NOT_LOCAL",
    "USER_NOT_LOCAL_WILL_FORWARD",
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
]
