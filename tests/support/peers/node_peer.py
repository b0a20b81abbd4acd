"""A node-opcua script (tests/node_opcua/) run as a server for a test: a peer we did not write."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parents[2] / "node_opcua"
START_TIMEOUT = 60.0


@contextlib.contextmanager
def node_script(script: str, *args: object) -> Iterator[list[str]]:
    """Run `node <script> ARGS...` until it prints `ready ...`; yields that line's words after
    `ready`. Skips the test if node-opcua is not installed (tests/run.sh installs it)."""
    if not (NODE_DIR / "node_modules").is_dir() or shutil.which("node") is None:
        pytest.skip("node-opcua is not installed: run `bash tests/run.sh` (npm install in "
                    "tests/node_opcua)")
    proc = subprocess.Popen(["node", str(NODE_DIR / script), *map(str, args)], cwd=NODE_DIR,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + START_TIMEOUT
    for line in proc.stdout:  # bounded by the server exiting, or by the deadline below
        lines.append(line)
        if line.startswith("ready") or time.monotonic() > deadline:
            break
    try:
        if not lines or not lines[-1].startswith("ready"):
            pytest.fail(f"node {script} did not start:\n" + "".join(lines[-20:]))
        yield lines[-1].split()[1:]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
