"""Delivering records to Kafka: every record until the broker has acknowledged it, none twice.

:func:`deliver` sends records through a :class:`Producer`'s ``send_all`` and retries (``retry_forever``) until each
one is acknowledged. A producer that says which records failed (:class:`ProduceFailed`, as
``stream.app.FaustProducer`` does) gets only those again, so a partial failure does not write the
others a second time.

Two failures that retrying alone does not fix:

* **A dead letter refused as too large** (``MessageSizeTooLargeError`` or
  ``RecordListTooLargeError`` from the broker, or the client's ``producer_max_request_bytes``). A
  dead letter is the original message plus headers, so an input message near the dead-letter
  topic's ``max.message.bytes`` used to hold its partition for good. It is sent again without the
  original key, value and headers: its reason, detail and source offset stay, and
  ``tracejudge.dlq.value_omitted`` gives the bytes left out. The message itself is still at that
  offset of the source topic for as long as the topic's retention keeps it. Counted as
  ``dead_letter_values_omitted``.
* **Any other refusal Kafka calls final** (an authorization failure, an invalid topic, a record
  that is not a dead letter and is too large): retried until the configuration changes, each
  attempt logged at ERROR and counted (``send_refused``), since waiting alone will not help.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka.errors import BrokerResponseError, MessageSizeTooLargeError, RecordListTooLargeError

from stream.dlq import DLQ_HEADER_PREFIX, REASON, VALUE_OMITTED, OutRecord

log = logging.getLogger(__name__)

MAX_KEPT_KEY = 1024  # a dead letter sent without its value keeps a key up to this size (a trace id is 32)

Retry = Callable[[Callable[[], Awaitable[Any]], str], Awaitable[Any]]
SendAll = Callable[[Sequence[OutRecord]], Awaitable[None]]


class Producer(Protocol):
    async def send_all(self, records: Sequence[OutRecord]) -> None:
        """Deliver every record (wait for the broker's acknowledgement) or raise; raise
        :class:`ProduceFailed` to name the records that were not delivered."""
        ...


class ProduceFailed(Exception):
    """Some records were not delivered (each with its error); the others were acknowledged."""

    def __init__(self, failures: Sequence[tuple[OutRecord, BaseException]], total: int) -> None:
        self.failures = list(failures)
        first = self.failures[0][1]
        super().__init__(f"{len(self.failures)} of {total} records not delivered: {type(first).__name__}: {first}")


@dataclass
class DeliveryCounts:
    values_omitted: int = 0  # dead letters sent without the original message (too large)
    refused: int = 0  # record deliveries Kafka refused for good (retried until configuration changes)


async def deliver(send_all: SendAll, records: Sequence[OutRecord], retry: Retry, what: str,
                  counts: DeliveryCounts) -> None:  # fmt: skip
    """Send ``records`` until each one is acknowledged (see the module docstring)."""
    pending = list(records)

    async def attempt() -> None:
        nonlocal pending
        try:
            await send_all(pending)
        except ProduceFailed as exc:
            again, final = [], []  # ``pending`` changes only once all of it is known: a failure here retries it whole
            for record, error in exc.failures:
                again.append(_next_try(record, error, counts))
                if again[-1] is record and refused(error):
                    final.append((record, error))
            pending = again
            if final:
                counts.refused += len(final)
                topics = ", ".join(sorted({record.topic for record, _ in final}))
                log.error("Kafka refuses %d of %d records for good (topic %s; %s: %s); they are retried until the "
                          "topic, ACL or size configuration changes", len(final), len(exc.failures), topics,
                          type(final[0][1]).__name__, final[0][1])  # fmt: skip
            raise
        pending = []

    await retry(attempt, what)


def _next_try(record: OutRecord, error: BaseException, counts: DeliveryCounts) -> OutRecord:
    if too_large(error) and is_dead_letter(record) and not _omitted(record):
        counts.values_omitted += 1
        smaller = without_value(record)
        log.error("dead letter of %s@%s refused as too large (%d bytes of value, %s): sent without the original "
                  "message, which stays at that offset of the source topic", _header(record, "source.topic"),
                  _header(record, "source.offset"), len(record.value or b""), error)  # fmt: skip
        return smaller
    return record


def without_value(record: OutRecord) -> OutRecord:
    """``record`` (a dead letter) without the original message: the tracejudge.dlq.* headers stay,
    plus ``tracejudge.dlq.value_omitted`` = the bytes of value, key and headers left out."""
    ours = [(k, v) for k, v in record.headers if k.startswith(DLQ_HEADER_PREFIX)]
    theirs = sum(len(k) + len(v or b"") for k, v in record.headers if not k.startswith(DLQ_HEADER_PREFIX))  # None: a null header
    key = record.key if record.key is not None and len(record.key) <= MAX_KEPT_KEY else None
    left_out = len(record.value or b"") + theirs + (len(record.key or b"") if key is None else 0)
    return OutRecord(record.topic, key, b"", ours + [(VALUE_OMITTED, str(left_out).encode())])


def is_dead_letter(record: OutRecord) -> bool:
    return any(k == REASON for k, _ in record.headers)


def too_large(error: BaseException) -> bool:
    return any(isinstance(e, (MessageSizeTooLargeError, RecordListTooLargeError)) for e in _chain(error))


def refused(error: BaseException) -> bool:
    """Kafka answered with an error it marks as not retriable (a client-side size check raises one
    of those too). Faust wraps the client's errors (``ProducerSendError``), so the chain is searched."""
    return any(isinstance(e, BrokerResponseError) and not e.retriable for e in _chain(error))


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _omitted(record: OutRecord) -> bool:
    return any(k == VALUE_OMITTED for k, _ in record.headers)


def _header(record: OutRecord, name: str) -> str:
    full = DLQ_HEADER_PREFIX + name
    return next((v.decode("utf-8", "replace") for k, v in record.headers if k == full), "?")
