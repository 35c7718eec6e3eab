"""A tiny DNS responder on a loopback UDP port, in Trio, for the resolver's tests.

It answers from a dict with dnspython's message API; ``None`` as an answer means SERVFAIL,
a missing name NXDOMAIN. ``mute=True`` reads every query and answers none (the resolver
that never answers). ``seen`` records every query it got, in order.
"""

from __future__ import annotations

from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import trio


class DnsResponder:
    def __init__(
        self,
        records: dict[tuple[str, str], tuple[list[str], int] | None],
        *,
        mute: bool = False,
    ) -> None:
        self.records = {(n.lower().rstrip("."), t): v for (n, t), v in records.items()}
        self.mute = mute
        self.seen: list[tuple[str, str]] = []
        self.port = 0

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            task_status.started(self.port)
            while True:
                data, peer = await sock.recvfrom(4096)
                query = dns.message.from_wire(data)
                question = query.question[0]
                key = (
                    question.name.to_text(omit_final_dot=True).lower(),
                    dns.rdatatype.to_text(question.rdtype),
                )
                self.seen.append(key)
                if self.mute:
                    continue
                await sock.sendto(self.answer(query, key).to_wire(), peer)

    def answer(self, query: dns.message.Message, key: tuple[str, str]) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if key not in self.records:
            names = {name for name, _type in self.records}
            if key[0] not in names:
                response.set_rcode(dns.rcode.NXDOMAIN)
            return response
        found = self.records[key]
        if found is None:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        texts, ttl = found
        question = query.question[0]
        rrset = dns.rrset.from_text_list(question.name, ttl, "IN", key[1], texts)
        response.answer.append(rrset)
        return response
