"""The gateway process around its parts: what survives a change of the site file."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from support.harness import POINT_LIST_CHANGES, historian_readings, spool_under_each, start_and_stop

from gateway.site.model import Point, Site, SiteSection
from gateway.status import TaskStatus
from gateway.supervise import supervise


def site(tmp_path: Path, tags: list[str]) -> Site:
    return Site(site=SiteSection(name="t", data_dir=tmp_path),
                points=[Point(tag=t) for t in tags])


@pytest.mark.parametrize("lists", POINT_LIST_CHANGES.values(), ids=POINT_LIST_CHANGES.keys())
def test_backlog_spooled_under_earlier_point_lists_lands_on_its_own_tags(
        tmp_path: Path, lists: list[list[str]]) -> None:
    expected = spool_under_each(lists, lambda tags: site(tmp_path, tags))
    current = site(tmp_path, lists[-1])
    start_and_stop(current)
    assert historian_readings(current, sorted(expected)) == expected


def test_a_task_that_fails_is_logged_shown_and_restarted(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """What a poller did when its emit raised (a full disk): it ended, and nothing said so."""
    monkeypatch.setattr("gateway.supervise.BACKOFF_MIN", 0.01)
    status = TaskStatus(name="poller:tcp:127.0.0.1:5020")
    runs: list[str] = []
    seen: list[tuple] = []

    async def part() -> None:
        runs.append("run")
        if len(runs) <= 2:
            raise OSError(28, "No space left on device")
        seen.append((status.state, status.restarts_total, status.cause))
        await asyncio.sleep(3600)  # then runs on, until cancelled

    async def scenario() -> None:
        task = asyncio.create_task(supervise(part, status))
        while len(runs) < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.ERROR, logger="gateway.supervise"):
        asyncio.run(scenario())
    assert seen == [("running", 2, "disk_full")]  # restarted twice; the cause kept for health
    assert status.last_error == "OSError: [Errno 28] No space left on device"
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"event=task_failed task=poller:tcp:127.0.0.1:5020 cause=disk_full error="
                     f"'OSError: [Errno 28] No space left on device' restart_in={d:g}"
                     for d in (0.01, 0.02)]
    assert all(r.exc_info for r in caplog.records)  # with its traceback
