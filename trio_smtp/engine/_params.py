"""The ESMTP parameters of MAIL and RCPT: SIZE (RFC 1870), BODY (RFC 6152, RFC 3030),
SMTPUTF8 (RFC 6531), RET, ENVID, NOTIFY and ORCPT (RFC 3461) and AUTH= (RFC 4954).

Each parameter is accepted only when its extension is enabled (and so advertised); any
other is 555 (RFC 5321 §4.1.1.11). Keywords and values are compared in ASCII only.
"""

from __future__ import annotations

from typing import Final

import attrs

from ._config import EngineConfig
from ._errors import RemoteProtocolError
from ._grammar import ascii_upper, decode_xtext, need_value
from ._replies import MSG_TOO_BIG, Reply

_NOTIFY: Final = frozenset({"SUCCESS", "FAILURE", "DELAY"})


def _refuse(code: int, text: str) -> RemoteProtocolError:
    return RemoteProtocolError(Reply(code, text))


@attrs.define
class MailParams:
    size: int | None = None
    body: str = "7BIT"
    smtputf8: bool = False
    ret: str | None = None
    envid: str | None = None
    auth: str | None = None


def mail_params(config: EngineConfig, params: dict[str, str | None]) -> MailParams:
    """What MAIL's ESMTP parameters say (RFC 1870, 6152, 3030, 6531, 3461, 4954)."""
    c = config
    out = MailParams()
    for key in params:
        if key == "SIZE":  # RFC 1870 §6
            value = need_value(params, key)
            # isascii(): str.isdigit() also accepts digits int() refuses ("²").
            if not value.isascii() or not value.isdigit() or len(value) > 20:
                raise _refuse(501, "5.5.4 bad SIZE value")
            if c.max_message_size is not None and int(value) > c.max_message_size:
                raise RemoteProtocolError(MSG_TOO_BIG)
            out.size = int(value)
        elif key == "BODY":  # RFC 6152, RFC 3030 §3
            body = ascii_upper(need_value(params, key))
            allowed = {"7BIT"}
            if c.eightbitmime:
                allowed.add("8BITMIME")
            if c.chunking and c.binarymime:
                allowed.add("BINARYMIME")
            if body not in allowed:
                raise _refuse(501, f"5.5.4 unsupported BODY={body}")
            out.body = body
        elif key == "SMTPUTF8" and c.smtputf8:  # RFC 6531 §3.4
            if params[key] is not None:
                raise _refuse(501, "5.5.4 SMTPUTF8 takes no value")
            out.smtputf8 = True
        elif key == "RET" and c.dsn:  # RFC 3461 §4.3
            ret = ascii_upper(need_value(params, key))
            if ret not in ("FULL", "HDRS"):
                raise _refuse(501, "5.5.4 RET must be FULL or HDRS")
            out.ret = ret
        elif key == "ENVID" and c.dsn:  # RFC 3461 §4.4
            if len(need_value(params, key)) > 100:
                raise _refuse(501, "5.5.4 ENVID too long")
            out.envid = decode_xtext(need_value(params, key), "ENVID")
        elif key == "AUTH" and c.auth_mechanisms:  # RFC 4954 §5
            out.auth = decode_xtext(need_value(params, key), "AUTH")
        else:
            raise _refuse(555, f"5.5.4 unsupported parameter {key}")
    return out


def rcpt_params(
    config: EngineConfig, params: dict[str, str | None]
) -> tuple[tuple[str, ...] | None, tuple[str, str] | None]:
    """RCPT's DSN parameters: ``(notify, orcpt)`` (RFC 3461 §4.1, §4.2)."""
    notify: tuple[str, ...] | None = None
    orcpt: tuple[str, str] | None = None
    for key in params:
        if key == "NOTIFY" and config.dsn:  # RFC 3461 §4.1
            words = tuple(ascii_upper(w) for w in need_value(params, key).split(","))
            unique = len(set(words)) == len(words)
            if not (words == ("NEVER",) or (set(words) <= _NOTIFY and unique)):
                raise _refuse(501, "5.5.4 bad NOTIFY value")
            notify = words
        elif key == "ORCPT" and config.dsn:  # RFC 3461 §4.2
            kind, sep, value = need_value(params, key).partition(";")
            if not sep or not kind or not value or not kind.isascii():
                raise _refuse(501, "5.5.4 bad ORCPT value")
            orcpt = (kind.lower(), decode_xtext(value, "ORCPT"))
        else:
            raise _refuse(555, f"5.5.4 unsupported parameter {key}")
    return notify, orcpt
