"""The configuration audit journal (data_dir/config-audit.jsonl): one JSON line per change of
the site file the running gateway applied or refused, with who asked (a token's name and role,
or "SIGHUP"), when, what changed and, for a refusal, why.

Append-only: each entry is one `write()` of a whole line to a file opened with O_APPEND, synced
before the change is applied, so entries never interleave and a crash can at most leave the last
line torn; a torn or foreign line is skipped (and counted) when the journal is read.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from gateway.data_dir import config_audit_path

log = logging.getLogger(__name__)

Outcome = Literal["applied", "refused", "unchanged"]


@dataclass(frozen=True)
class Who:
    """Who asked for a change: a token's name and role (the API), or the signal."""

    name: str
    role: str | None = None  # None: not an API caller (SIGHUP)


SIGHUP = Who("SIGHUP")


@dataclass(frozen=True)
class AuditEntry:
    at: str  # ISO 8601 UTC
    who: str
    role: str | None
    via: Literal["sighup", "api"]
    outcome: Outcome
    sha256: str  # of the site file (TOML) asked for
    changes: Mapping[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # the refusal's reasons, check-config's


def append(data_dir: Path, entry: AuditEntry) -> None:
    """Add `entry` to the journal of `data_dir`, durably, as one line."""
    line = (json.dumps(asdict(entry), ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    fd = os.open(config_audit_path(data_dir), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one write with O_APPEND: whole, after every earlier line
        os.fsync(fd)
    finally:
        os.close(fd)


def read(data_dir: Path, limit: int | None = None) -> tuple[list[AuditEntry], int]:
    """(the last `limit` entries, oldest first; lines skipped as unreadable)."""
    try:
        lines = config_audit_path(data_dir).read_bytes().splitlines()
    except FileNotFoundError:
        return [], 0
    entries, skipped = [], 0
    for line in lines:
        try:
            entries.append(AuditEntry(**json.loads(line)))
        except (ValueError, TypeError):  # torn by a crash, or not ours
            skipped += 1
    if skipped:
        log.warning("event=config_audit_unreadable_lines path=%s lines=%d",
                    config_audit_path(data_dir), skipped)
    return (entries if limit is None else entries[-limit:] if limit else []), skipped
