"""`[[northbound]]` in a site file and the broker half of `[central]`: where the broker is and
how to log in to it.

A model of its own rather than one of gateway.config's sections, so that the site file model
only lists it: the MQTT and TLS details stay beside the code that uses them.
"""

from __future__ import annotations

import os
import re
import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

# Sparkplug ids (group, edge node, host) become MQTT topic levels: no '/', '+', '#'; and the
# centre names a site's alarms `<node>:<id>`: no ':'.
_ID = re.compile(r"[^/+#:\s]{1,64}")


def sparkplug_id(value: str) -> str:
    if not _ID.fullmatch(value):
        raise PydanticCustomError("sparkplug_id", f"{value!r}: an id is 1-64 characters "
                                  "without '/', '+', '#', ':' or spaces (it is an MQTT topic "
                                  "level)")
    return value


SparkplugId = Annotated[str, AfterValidator(sparkplug_id)]
DEFAULT_PORT = {"mqtt": 1883, "mqtts": 8883}


def _path(value: object) -> Path:
    # A site file is validated strictly, and TOML has no path type: a path is text.
    if isinstance(value, str | Path) and str(value):
        return Path(value).expanduser()
    raise PydanticCustomError("path_type", f"expected a file path (text), got {value!r}")


FilePath = Annotated[Path, BeforeValidator(_path)]


class BrokerSettings(BaseModel):
    """The MQTT broker and the credentials to reach it; `mqtts://` turns TLS on (the system's
    CA store unless `ca_file` names one; `cert_file` + `key_file` for client certificates)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = "mqtt://127.0.0.1:1883"
    group: SparkplugId = "scadawatch"
    username: str | None = Field(default=None, min_length=1)
    password_env: str | None = Field(default=None, min_length=1)  # the variable holding it
    ca_file: FilePath | None = None
    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    keepalive: int = Field(default=10, ge=2, le=3600)  # s: the broker sends the will after 1.5x

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        if not re.fullmatch(r"mqtts?://[^\s/:]+(:\d{1,5})?/?", value):
            raise PydanticCustomError("url", f"{value!r} is not mqtt://host[:port] or "
                                      "mqtts://host[:port]")
        return value

    def resolved(self, base: Path) -> BrokerSettings:
        """Relative certificate paths taken from the folder of the file that named them."""
        return self.model_copy(update={
            k: base / v for k in ("ca_file", "cert_file", "key_file")
            if (v := getattr(self, k)) is not None})

    def endpoint(self) -> Endpoint:
        """What aiomqtt.Client needs; the password read from its variable now, so a changed
        secret is picked up at the next connection."""
        parts = urllib.parse.urlsplit(self.url)
        password = None
        if self.password_env is not None:
            password = os.environ.get(self.password_env)
            if password is None:
                raise BrokerConfigError(f"password_env: environment variable "
                                        f"{self.password_env} is not set")
        tls = None
        if parts.scheme == "mqtts":
            tls = ssl.create_default_context(
                cafile=None if self.ca_file is None else str(self.ca_file))
            if self.cert_file is not None:
                tls.load_cert_chain(str(self.cert_file),
                                    None if self.key_file is None else str(self.key_file))
        return Endpoint(host=parts.hostname or "127.0.0.1",
                        port=parts.port or DEFAULT_PORT[parts.scheme],
                        username=self.username, password=password, tls=tls,
                        keepalive=self.keepalive)


class Northbound(BrokerSettings):
    """One `[[northbound]]` table: this site as a Sparkplug B edge node."""

    kind: Literal["sparkplug"]
    node: SparkplugId | None = None  # default: the site's name
    # A host application's id (`[central] host_id`): publish only while its STATE says it is
    # online, as Sparkplug 3.0 asks; the spool keeps what waits meanwhile.
    primary_host: SparkplugId | None = None


class BrokerConfigError(Exception):
    """A broker setting that cannot be used (an unset password variable)."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: ssl.SSLContext | None
    keepalive: int
