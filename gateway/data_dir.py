"""Every file the gateway keeps under `[site] data_dir`, named once, and the one atomic write.

| path | what | written by |
|---|---|---|
| `spool/` | the store-and-forward spool: segments and point lists | `storage.spool` |
| `historian.sqlite` | the embedded historian | `storage.historian` |
| `status.json` | the gateway's status snapshot, read by the API | `runtime` |
| `influxdb-progress.json` | what InfluxDB holds of the spool | `storage.influxdb.catchup` |
| `influxdb-quarantine.lp` | readings InfluxDB refused | `storage.influxdb.sink` |
| `influxdb-alarms-quarantine.lp` | alarm lines InfluxDB refused | `alarms.annotations` |
| `anomaly-state.npz` | the engine's learned state and spool position | `engine_state` |
| `alarms.sqlite` | the alarm store and its journal | `alarms.store` |
| `tokens.json` | API tokens (hashes only) | `api.tokens` |
| `config-audit.jsonl` | site file changes applied or refused while running | `config_audit` |
| `pki/` | the OPC UA client certificate and trust lists | `inputs.opcua.security` |
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from gateway.site.model import Site

SPOOL = "spool"
HISTORIAN = "historian.sqlite"
STATUS = "status.json"
INFLUX_PROGRESS = "influxdb-progress.json"
INFLUX_QUARANTINE = "influxdb-quarantine.lp"
ALARMS_QUARANTINE = "influxdb-alarms-quarantine.lp"
ANOMALY_STATE = "anomaly-state.npz"
ALARMS = "alarms.sqlite"
TOKENS = "tokens.json"
CONFIG_AUDIT = "config-audit.jsonl"
PKI = "pki"


def spool_dir(site: Site) -> Path:
    return site.site.data_dir / SPOOL


def historian_path(site: Site) -> Path:
    return site.site.data_dir / HISTORIAN


def status_path(site: Site) -> Path:
    return site.site.data_dir / STATUS


def progress_path(site: Site) -> Path:
    """What InfluxDB holds of the spool (see gateway.storage.influxdb.catchup)."""
    return site.site.data_dir / INFLUX_PROGRESS


def state_path(site: Site) -> Path:
    return site.site.data_dir / ANOMALY_STATE


def store_path(data_dir: Path) -> Path:
    """The alarm store of a data dir (the API opens it without a site)."""
    return Path(data_dir) / ALARMS


def config_audit_path(data_dir: Path) -> Path:
    """The configuration audit journal of a data dir (the API reads it without a site)."""
    return Path(data_dir) / CONFIG_AUDIT


def write_atomically(path: Path, content: bytes | Callable[[BinaryIO], None], *,
                     durable: bool, private: bool = False) -> None:
    """Replace `path` with `content` (bytes, or a function writing to the open file), so that
    a reader, or the file after a crash, is the old one or the new one, never a mix.

    `durable`: the content is on disk (fsync) before the rename, for what must survive a power
    cut (a directory's entry is the caller's to sync where that matters: the spool). A
    snapshot rewritten every few seconds (status, InfluxDB progress) need not be.
    `private`: the file is created for its owner only (0600), as secrets need.
    """
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a crash's leftover: never write into a file of other permissions
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
