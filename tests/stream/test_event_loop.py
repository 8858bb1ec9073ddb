"""The worker's event loop setting: uvloop by default, asyncio on request, anything else refused."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import uvloop
from pydantic import ValidationError

from stream.config import Settings
from stream.event_loop import use_event_loop


@pytest.fixture(autouse=True)
def _restore_policy() -> Iterator[None]:
    before = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(before)


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_uvloop_runs_the_loops_created_after_it() -> None:
    use_event_loop("uvloop")
    assert asyncio.run(_loop_type()) is uvloop.Loop


def test_asyncio_is_the_standard_librarys_loop_again_after_uvloop() -> None:
    use_event_loop("uvloop")
    use_event_loop("asyncio")
    kind = asyncio.run(_loop_type())
    assert kind is not uvloop.Loop and issubclass(kind, asyncio.BaseEventLoop)


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="event loop 'trio'"):
        use_event_loop("trio")


def test_the_setting_defaults_to_uvloop_and_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().event_loop == "uvloop"
    monkeypatch.setenv("TRACEJUDGE_EVENT_LOOP", "asyncio")
    assert Settings().event_loop == "asyncio"
    monkeypatch.setenv("TRACEJUDGE_EVENT_LOOP", "gevent")
    with pytest.raises(ValidationError):
        Settings()
