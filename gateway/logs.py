"""Structured logs: one event per line, `key=value`, to stderr. No secrets, no tokens."""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass


class KeyValueFormatter(logging.Formatter):
    """`ts=2026-11-26T10:00:00.123Z level=info logger=gateway.inputs.modbus.bus event=...`"""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = (f"ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
                f"logger={record.name} {record.getMessage()}")
        if record.exc_info:
            # Keep one event per line: the traceback's lines are joined.
            line += " exc=" + repr(self.formatException(record.exc_info))
        return line


@dataclass
class _Window:
    start: float
    passed: int = 0
    held: int = 0


class RateLimit(logging.Filter):
    """At most `burst` lines of one kind per `period` seconds, and `total` of all kinds; the
    others are counted, and the first line of the kind in a later period says how many were
    held back (`suppressed=N`). For lines a peer can cause at will (a refused request, a
    connection the process cannot accept), so that they cannot fill the disk.

    As a logger filter, a kind is the logger, level and message template; `admit(kind)`
    serves a caller that names its own kinds.
    """

    MAX_KINDS = 256  # kinds remembered; a new one beyond forgets the oldest

    def __init__(self, period: float = 60.0, burst: int = 10, total: int = 100) -> None:
        super().__init__()
        self.period, self.burst, self.total = period, burst, total
        self._windows: dict[object, _Window] = {}
        self._all = _Window(-period)
        self._lock = threading.Lock()

    def admit(self, kind: object) -> int | None:
        """None: hold this line back; else log it, saying how many of its kind were held
        back before it (0: none)."""
        now = time.monotonic()
        with self._lock:
            if now - self._all.start >= self.period:
                self._all = _Window(now)
            window = self._windows.get(kind)
            held = 0
            if window is None or now - window.start >= self.period:
                held = window.held if window else 0
                if window is None and len(self._windows) >= self.MAX_KINDS:
                    del self._windows[next(iter(self._windows))]
                window = self._windows[kind] = _Window(now)
            if window.passed >= self.burst or self._all.passed >= self.total:
                window.held += held + 1
                return None
            window.passed += 1
            self._all.passed += 1
            return held

    def filter(self, record: logging.LogRecord) -> bool:
        # The template, not the text: asyncio logs whole messages, the first line names them.
        held = self.admit((record.name, record.levelno,
                           str(record.msg).split("\n", 1)[0][:80]))
        if held:
            record.msg, record.args = f"{record.getMessage()} suppressed={held}", None
        return held is not None


def rate_limit(*loggers: str) -> None:
    """Put a RateLimit on each named logger (once)."""
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RateLimit) for f in logger.filters):
            logger.addFilter(RateLimit())


def setup_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter (pymodbus logs every failed connect at error level) stays out of our log.
    for noisy in ("pymodbus", "asyncua", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    # wntr reports every solver iteration at info level; pandapower that plotly is missing.
    for chatty in ("wntr", "pandapower"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # A socket the process cannot accept (no file descriptor left) is logged by asyncio with
    # a traceback, and uvicorn warns once per request refused over its limit.
    rate_limit("asyncio", "uvicorn.error")
