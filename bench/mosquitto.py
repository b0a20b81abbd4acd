"""Debian's mosquitto on a free loopback port, with its own config and persistence folder in a
temporary directory; stopped and started again by a test (a broker outage) or a bench."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.peers import free_port

START_LIMIT = 15.0  # seconds mosquitto may take to listen

CONFIG = """\
listener {port} 127.0.0.1
allow_anonymous true
# A stop (SIGTERM) saves the sessions and their queued QoS 1 messages; a start reloads them.
persistence true
persistence_location {dir}/
# The host's session queues what the sites send while it reconnects: no cap (default 1000).
max_queued_messages 0
"""


@dataclass
class Mosquitto:
    folder: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "mosquitto.conf"
        conf.write_text(CONFIG.format(port=self.port, dir=self.folder))
        with (self.folder / "mosquitto.log").open("ab") as log:
            self.proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_LIMIT
        while True:
            assert self.proc.poll() is None, (self.folder / "mosquitto.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "mosquitto did not listen"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=15)
        self.proc = None
