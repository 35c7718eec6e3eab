"""What the server says about itself: the 220 greeting, the HELO/EHLO/LHLO reply with
the extension keywords it advertises (RFC 5321 §4.1.1.1; each keyword's own RFC), and
the 221 that answers QUIT.

Each depends only on the configuration and a few session facts, so each is built once
and cached: an EHLO costs a dictionary look-up, not a string join.
"""

from __future__ import annotations

import functools

from ._config import EngineConfig
from ._replies import Reply
from ._xclient import ATTRIBUTES as XCLIENT_ATTRIBUTES


@functools.lru_cache(maxsize=64)
def greeting_reply(config: EngineConfig) -> Reply:
    """The default 220 greeting (also the answer to a successful XCLIENT)."""
    kind = "LMTP" if config.lmtp else config.banner
    return Reply(220, f"{config.hostname} {kind}")


@functools.lru_cache(maxsize=64)
def closing_reply(hostname: str) -> Reply:
    """The default 221 reply to QUIT."""
    return Reply(221, f"2.0.0 {hostname} closing connection")


def _keywords(c: EngineConfig, tls_active: bool, xclient: bool) -> list[str]:
    words = []
    if c.pipelining:
        words.append("PIPELINING")  # RFC 2920
    words.append(f"SIZE {c.max_message_size}" if c.max_message_size else "SIZE")  # RFC 1870
    if c.eightbitmime:
        words.append("8BITMIME")  # RFC 6152
    if c.smtputf8:
        words.append("SMTPUTF8")  # RFC 6531
    words.append("ENHANCEDSTATUSCODES")  # RFC 2034
    if c.chunking:
        words.append("CHUNKING")  # RFC 3030
        if c.binarymime:
            words.append("BINARYMIME")
    if c.dsn:
        words.append("DSN")  # RFC 3461
    if c.starttls and not tls_active:
        words.append("STARTTLS")  # RFC 3207 §4.2: not again once TLS is on
    if c.auth_mechanisms and (tls_active or c.auth_insecure):
        words.append("AUTH " + " ".join(c.auth_mechanisms))  # RFC 4954
    if xclient:
        words.append("XCLIENT " + " ".join(XCLIENT_ATTRIBUTES))
    return words


@functools.lru_cache(maxsize=64)
def hello_reply(
    config: EngineConfig, *, extended: bool, tls_active: bool, xclient: bool = False
) -> Reply:
    """The default reply to HELO (the name) or EHLO/LHLO (the name and extensions)."""
    if not extended:
        return Reply(250, config.hostname)
    return Reply(250, "\n".join([config.hostname, *_keywords(config, tls_active, xclient)]))
