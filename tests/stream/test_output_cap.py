"""Unsent output is capped in bytes: a client that pipelines and never reads stops being read."""

from __future__ import annotations

from trio_smtp.engine import Engine


def test_the_engine_counts_the_bytes_it_holds_for_the_client() -> None:
    engine = Engine()
    engine.greet()
    greeting = engine.pending_output
    assert greeting == len(engine.data_to_send()) > 0
    assert engine.pending_output == 0
    engine.receive_data(b"NOOP\r\nNOOP\r\n")
    for _ in range(2):
        engine.next_event()
        engine.respond()
    held = engine.pending_output
    assert held == len(engine.data_to_send()) == 2 * len(b"250 2.0.0 OK\r\n")
    assert engine.pending_output == 0
