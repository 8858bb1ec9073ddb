"""Product events: parsing, and every kind of bad event rejected with its reason."""

from __future__ import annotations

import json

import pytest

from stream.signals.actions import EventError, parse_event

TID = "0af7651916cd43dd8448eb211c80319c"


def ev(**doc: object) -> bytes:
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "doc,expected_ms",
    [
        ({"ts": "2026-11-22T10:00:00Z"}, 1795341600000),
        ({"ts": "2026-11-22T11:00:00+01:00"}, 1795341600000),
        ({"ts": 1795341600}, 1795341600000),
        ({"ts": 1795341600000}, 1795341600000),
        ({"ts": 1795341600000000}, 1795341600000),
        ({"ts": 1795341600000000000}, 1795341600000),  # OTel's unit: it read as the year 58,000
    ],
    ids=["iso-z", "iso-offset", "epoch-s", "epoch-ms", "epoch-us", "epoch-ns"],
)
def test_timestamps(doc: dict[str, object], expected_ms: int) -> None:
    e = parse_event(ev(trace_id=TID.upper(), type="regenerate", **doc))
    assert e.ts_ms == expected_ms and e.trace_id == TID and e.type == "regenerate"


def test_event_id_defaults_to_content_hash_and_replays_match() -> None:
    raw = ev(conversation_id="c-1", type="thumbs_down", ts=1795341600, attributes={"b": 1, "a": 2})
    a, b = parse_event(raw), parse_event(raw)
    assert a.event_id == b.event_id and len(a.event_id) == 32
    assert a.attributes_json == '{"a":2,"b":1}' and a.trace_id == ""
    assert parse_event(ev(event_id="e-7", trace_id=TID, type="copy", ts=1)).event_id == "e-7"


@pytest.mark.parametrize(
    "raw,reason",
    [
        (b"", "empty_message"),
        (b"{oops", "undecodable"),
        (b"[1, 2]", "undecodable"),
        (ev(trace_id=TID, ts=1), "missing_type"),
        (ev(trace_id=TID, type="teleport", ts=1), "unknown_type"),
        (ev(trace_id="xyz", type="regenerate", ts=1), "invalid_trace_id"),
        (ev(type="regenerate", ts=1), "unlinkable"),
        (ev(trace_id=TID, type="regenerate"), "invalid_ts"),
        (ev(trace_id=TID, type="regenerate", ts="yesterday"), "invalid_ts"),
        (ev(trace_id=TID, type="regenerate", ts="2026-11-22T10:00:00"), "invalid_ts"),
        (ev(trace_id=TID, type="regenerate", ts=1, attributes=[1]), "invalid_attributes"),
        (ev(trace_id=5, type="regenerate", ts=1), "invalid_ids"),
        (b'{"trace_id": "%s", "type": "regenerate", "ts": NaN}' % TID.encode(), "invalid_ts"),
        (b'{"trace_id": "%s", "type": "regenerate", "ts": Infinity}' % TID.encode(), "invalid_ts"),
        (b'{"trace_id": "%s", "type": "regenerate", "ts": 1e999}' % TID.encode(), "invalid_ts"),
        (ev(trace_id=TID, type="regenerate", ts=-5), "invalid_ts"),
        (ev(trace_id=TID, type="regenerate", ts=1e25), "invalid_ts"),
    ],
    ids=["empty", "garbage", "array", "no-type", "unknown-type", "bad-trace-id", "no-ids", "no-ts",
         "bad-ts", "naive-ts", "bad-attributes", "non-string-id", "nan-ts", "infinite-ts", "overflowing-ts",
         "negative-ts", "far-future-ts"],  # fmt: skip
)
def test_bad_events_have_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(EventError) as exc:
        parse_event(raw)
    assert exc.value.reason == reason


def test_signal_polarity() -> None:
    e = parse_event(ev(trace_id=TID, type="thumbs_up", ts=1))
    assert e.signal(frozenset({"thumbs_down"})).polarity == "positive"
    # neither way unless the policy says so: "report" and "retry" read as praise before
    for kind in ("report", "retry", "edit"):
        assert parse_event(ev(trace_id=TID, type=kind, ts=1)).signal(frozenset({"thumbs_down"})).polarity == "neutral"
    assert parse_event(ev(trace_id=TID, type="report", ts=1)).signal(frozenset({"report"})).polarity == "negative"
    d = parse_event(ev(trace_id=TID, type="thumbs_down", ts=1))
    s = d.signal(frozenset({"thumbs_down"}))
    assert (s.polarity, s.source, s.rule, s.ts_ns) == ("negative", "action", "action:thumbs_down", 1_000_000_000)


def test_an_unknown_action_signal_type_in_the_policy_is_an_error() -> None:
    from stream.policy import Policy

    with pytest.raises(ValueError, match=r"action_signals: unknown event types \['thumbsdown'\]"):
        Policy.model_validate({"action_signals": ["regenerate", "thumbsdown"]})  # a typo never counted
