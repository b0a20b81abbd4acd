"""Real InfluxDB 1.6 (`influxd`) and VictoriaMetrics servers on free loopback ports, each with
its own config and data in a temporary directory; stopped (and restartable) by the test."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from scadawatch.ports import free_port

START_LIMIT = 30.0  # seconds a server may take to answer after starting

INFLUXD_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{dir}/meta"
[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  auth-enabled = {auth}
  log-enabled = false
  max-row-limit = 0
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
"""


def _wait_http(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_LIMIT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}:\n"
                               f"{log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url}: no answer within {START_LIMIT} s") from None
            time.sleep(0.1)


@dataclass
class Server:
    """A server process that `stop()` and `start()` again on the same port and data."""

    command: list[str]
    ready_path: str
    port: int
    dir: Path
    proc: subprocess.Popen | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.dir / "server.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT)
        _wait_http(self.url + self.ready_path, self.proc, log)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclass
class Influxd(Server):
    user: str = ""
    password: str = ""

    def query(self, q: str, db: str = "", method: str = "GET") -> list[dict]:
        """InfluxQL through `/query` (epoch ns); the results' series."""
        params = {"q": q, "epoch": "ns"} | ({"db": db} if db else {})
        if self.user:
            params |= {"u": self.user, "p": self.password}
        request = urllib.request.Request(
            self.url + "/query?" + urllib.parse.urlencode(params), method=method)
        with urllib.request.urlopen(request, timeout=30) as r:
            body = json.load(r)
        out = []
        for result in body["results"]:
            if "error" in result:
                raise RuntimeError(f"{q}: {result['error']}")
            out += result.get("series", [])
        return out

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"', method="POST")


def influxd(directory: Path, *, user: str = "", password: str = "") -> Influxd:
    """Start `influxd`; with a user, auth is on and that user is its admin."""
    if shutil.which("influxd") is None:
        raise RuntimeError("influxd is not installed: run tests/run.sh (apt package influxdb)")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "influxd.conf"
    config.write_text(INFLUXD_CONFIG.format(rpc_port=free_port(), dir=directory, port=port,
                                            auth="true" if user else "false"))
    server = Influxd(["influxd", "-config", str(config)], "/ping", port, directory,
                     user=user, password=password)
    server.start()
    if user:  # the first user may be created without credentials, and must be an admin
        user_, server.user = server.user, ""
        server.query(f"CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES",
                     method="POST")
        server.user = user_
    return server


@dataclass
class Victoria(Server):
    def export(self, match: str) -> list[dict]:
        """Every series matching `match`, as `/api/v1/export` gives them (after a flush)."""
        with urllib.request.urlopen(self.url + "/internal/force_flush", timeout=30):
            pass
        url = self.url + "/api/v1/export?" + urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(url, timeout=30) as r:
            return [json.loads(line) for line in r.read().splitlines() if line.strip()]


def victoria(directory: Path) -> Victoria:
    if shutil.which("victoria-metrics") is None:
        raise RuntimeError("victoria-metrics is not installed: run tests/run.sh")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # dedup at 1 ms, as docs/gateway.md advises: a batch the sink re-sends overwrites itself
    server = Victoria(["victoria-metrics", f"-httpListenAddr=127.0.0.1:{port}",
                       f"-storageDataPath={directory / 'data'}", "-loggerLevel=ERROR",
                       "-dedup.minScrapeInterval=1ms"], "/health", port, directory)
    server.start()
    return server
