"""The central file (`scadawatch central --config central.toml`): `[site]` (name, data_dir),
`[central]` (the broker as in a site's `[[northbound]]`, and `host_id`), `[historian]` (a
site file's keys: `kind = "embedded"`, a file per site, or `"influxdb"`, every site in one
database or bucket with the site as a tag), `[api]`. Errors name file, key path and reason,
as a site file's do."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from anomaly.core.alarms import Priority
from gateway.site.loader import ConfigError, ConfigProblem, key_path
from gateway.site.model import ApiSection, HistorianSection, SiteSection
from gateway.site.northbound import BrokerSettings, SparkplugId
from gateway.site.rules import check_site


class CentralSection(BrokerSettings):
    """The broker (keys as `[[northbound]]`'s), the Sparkplug group watched, the host id
    whose STATE edge nodes wait for (their `primary_host`)."""

    host_id: SparkplugId = "scadawatch-central"
    comms_priority: Priority = "high"  # of the alarm a site's death raises
    # Seconds after a site's death (its will) before its comms alarm is raised: a gateway
    # restarting is back within it (0: at once).
    comms_delay: float = Field(default=0.0, ge=0.0, le=3600.0)


class CentralFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    site: SiteSection
    central: CentralSection = CentralSection()
    historian: HistorianSection = HistorianSection()
    api: ApiSection = ApiSection()


def load_central(path: str | Path) -> CentralFile:
    """Read and validate a central file; `ConfigError` lists every problem. Relative
    `data_dir` and certificate paths are taken from the file's folder."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError([ConfigProblem(file=str(path), key="", reason=str(e))]) from None
    try:
        parsed = CentralFile.model_validate(raw, strict=True)
    except ValidationError as e:
        raise ConfigError([ConfigProblem(
            file=str(path), key=key_path(tuple(err["loc"])),
            reason="unknown key" if err["type"] == "extra_forbidden" else err["msg"])
            for err in e.errors()]) from None
    problems = [ConfigProblem(file=str(path), key=f"{section}.{key}", reason=reason)
                for section, _, key, reason in check_site(parsed.historian, [], [],
                                                          lambda s, i: "")]
    if problems:
        raise ConfigError(problems)
    base = path.absolute().parent
    site = parsed.site.model_copy(update={"data_dir": base / parsed.site.data_dir})
    return parsed.model_copy(update={"site": site, "central": parsed.central.resolved(base)})
