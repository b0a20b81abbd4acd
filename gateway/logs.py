"""Structured logs: one event per line, `key=value`, to stderr. No secrets, no tokens."""

from __future__ import annotations

import logging
import sys
import time


class KeyValueFormatter(logging.Formatter):
    """`ts=2026-11-26T10:00:00.123Z level=info logger=gateway.modbus event=device_down ...`"""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = (f"ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
                f"logger={record.name} {record.getMessage()}")
        if record.exc_info:
            # Keep one event per line: the traceback's lines are joined.
            line += " exc=" + repr(self.formatException(record.exc_info))
        return line


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
