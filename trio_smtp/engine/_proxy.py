"""HAProxy PROXY protocol headers, versions 1 and 2.

Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt (§2.1 v1, §2.2 v2).
The header comes before anything else on the connection; the server reads it before
sending its greeting. Anything malformed or oversized is fatal for the connection.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Final

from ._events import ProxyHeader

V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
#: §2.1: a v1 header is at most 107 octets including CRLF.
V1_MAX: Final = 107
#: The largest v2 header accepted (16-octet prefix plus addresses and TLVs).
V2_MAX: Final = 16 + 2048


class ProxyHeaderError(Exception):
    """The PROXY header is malformed or oversized."""


def _port(text: bytes) -> int:
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text.startswith(b"0")):
        raise ProxyHeaderError(f"bad port {text!r}")
    value = int(text)
    if value > 65535:
        raise ProxyHeaderError(f"bad port {text!r}")
    return value


def _parse_v1(line: bytes) -> ProxyHeader:
    parts = line.split(b" ")
    if parts[0] != b"PROXY" or len(parts) < 2:
        raise ProxyHeaderError("not a PROXY v1 header")
    if parts[1] == b"UNKNOWN":
        return ProxyHeader(version=1, local=True, source=None, destination=None)
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError(f"bad PROXY v1 header {line[:60]!r}")
    cls = ipaddress.IPv4Address if parts[1] == b"TCP4" else ipaddress.IPv6Address
    try:
        src = cls(parts[2].decode("ascii"))
        dst = cls(parts[3].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise ProxyHeaderError(f"bad address in PROXY v1 header {line[:60]!r}") from None
    return ProxyHeader(
        version=1,
        local=False,
        source=(str(src), _port(parts[4])),
        destination=(str(dst), _port(parts[5])),
    )


def _parse_tlvs(data: bytes) -> dict[int, bytes]:
    tlvs: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        if len(data) - i < 3:
            raise ProxyHeaderError("truncated PROXY v2 TLV")
        kind, length = data[i], int.from_bytes(data[i + 1 : i + 3], "big")
        if i + 3 + length > len(data):
            raise ProxyHeaderError("truncated PROXY v2 TLV")
        tlvs[kind] = data[i + 3 : i + 3 + length]
        i += 3 + length
    return tlvs


def _parse_v2(header: bytes) -> ProxyHeader:
    ver_cmd, fam = header[12], header[13]
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError(f"bad PROXY v2 version {ver_cmd >> 4}")
    command = ver_cmd & 0x0F
    if command not in (0, 1):
        raise ProxyHeaderError(f"bad PROXY v2 command {command}")
    body = header[16:]
    if command == 0:  # LOCAL: health checks from the proxy itself
        return ProxyHeader(version=2, local=True, source=None, destination=None)
    family, transport = fam >> 4, fam & 0x0F
    if family == 0:  # AF_UNSPEC
        return ProxyHeader(version=2, local=True, source=None, destination=None)
    if transport != 1:
        raise ProxyHeaderError("PROXY v2 transport is not STREAM")
    if family == 1:
        if len(body) < 12:
            raise ProxyHeaderError("short PROXY v2 IPv4 addresses")
        s, d = ipaddress.IPv4Address(body[0:4]), ipaddress.IPv4Address(body[4:8])
        sp, dp = struct.unpack("!HH", body[8:12])
        rest = body[12:]
    elif family == 2:
        if len(body) < 36:
            raise ProxyHeaderError("short PROXY v2 IPv6 addresses")
        s6, d6 = ipaddress.IPv6Address(body[0:16]), ipaddress.IPv6Address(body[16:32])
        sp, dp = struct.unpack("!HH", body[32:36])
        rest = body[36:]
        return ProxyHeader(
            version=2,
            local=False,
            source=(str(s6), sp),
            destination=(str(d6), dp),
            tlvs=_parse_tlvs(rest),
        )
    else:
        raise ProxyHeaderError(f"unsupported PROXY v2 address family {family}")
    return ProxyHeader(
        version=2,
        local=False,
        source=(str(s), sp),
        destination=(str(d), dp),
        tlvs=_parse_tlvs(rest),
    )


def parse_proxy_header(buf: bytearray) -> tuple[ProxyHeader | None, int]:
    """Try to read a PROXY header from the start of ``buf``.

    Returns:
        ``(header, consumed)``, or ``(None, 0)`` if more bytes are needed.

    Raises:
        ProxyHeaderError: for anything that is not a valid v1 or v2 header.
    """
    if len(buf) < 12:
        if V2_SIGNATURE.startswith(bytes(buf)) or b"PROXY ".startswith(bytes(buf[:6])):
            return None, 0
        raise ProxyHeaderError("no PROXY header")
    if buf.startswith(V2_SIGNATURE):
        if len(buf) < 16:
            return None, 0
        length = int.from_bytes(buf[14:16], "big")
        if 16 + length > V2_MAX:
            raise ProxyHeaderError(f"PROXY v2 header too long ({length} octets)")
        if len(buf) < 16 + length:
            return None, 0
        return _parse_v2(bytes(buf[: 16 + length])), 16 + length
    if buf.startswith(b"PROXY "):
        end = buf.find(b"\r\n", 0, V1_MAX)
        if end < 0:
            if len(buf) >= V1_MAX:
                raise ProxyHeaderError("PROXY v1 header too long")
            return None, 0
        return _parse_v1(bytes(buf[:end])), end + 2
    raise ProxyHeaderError("no PROXY header")
