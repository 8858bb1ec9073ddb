"""stream/provenance.py: insert tokens from source messages, and the source ranges log lines name."""

from __future__ import annotations

from stream.dlq import InMessage
from stream.provenance import message_token, sources, token


def msg(topic: str, partition: int, offset: int, ts: int = 1, value: bytes = b"v") -> InMessage:
    return InMessage(topic, partition, offset, None, value, ts)


def test_sources_names_each_partition_range_in_order() -> None:
    items = [(msg("b", 0, 7), []), (msg("a", 3, 12), []), (msg("a", 3, 10), []), (msg("a", 1, 5), [])]
    assert sources(items) == "a[1]@5, a[3]@10-12, b[0]@7"
    assert sources([]) == ""


def test_message_token_is_the_same_for_a_replay_and_differs_for_reused_offsets() -> None:
    first = [msg("t", 0, 1), msg("t", 0, 2)]
    assert message_token("spans", first) == message_token("spans", [msg("t", 0, 1), msg("t", 0, 2)])
    assert message_token("spans", first) != message_token("events", first)
    assert message_token("spans", first) != message_token("spans", [msg("t", 0, 1, ts=2), msg("t", 0, 2)])
    assert message_token("spans", first) != message_token("spans", [msg("t", 0, 1, value=b"vv"), msg("t", 0, 2)])
    assert token("x", ["a", "b"]) != token("x", ["ab"])  # parts are separated
