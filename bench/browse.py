"""`scadawatch browse opcua` on a large server: seconds from the command to the point list.

Server: node-opcua (tests/node_opcua/tree.js, a stack we did not write) with `--areas` areas of
800 variables (5 lines x 5 stations x 4 devices x 8 variables, 7 levels deep, analog items with
EngineeringUnits and EURange) plus a folder of 1,200, and small operation limits
(MaxNodesPerBrowse 100, MaxNodesPerRead 250): the many round trips a strict server forces.
Each run is the whole command in a fresh process (Python start, connect, walk, attribute
reads, CSV), timed from outside; the figure is the median of `--runs`.

    python -m bench.browse [--areas 12] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NODE_DIR = Path(__file__).resolve().parent.parent / "tests" / "node_opcua"
START_LIMIT = 120.0  # seconds node-opcua may take to build the address space


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(areas: int, runs: int) -> dict[str, float]:
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(["node", str(NODE_DIR / "tree.js"), str(port),
                                   f"{tmp}/pki", str(areas)], cwd=NODE_DIR,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert server.stdout is not None
            deadline = time.monotonic() + START_LIMIT
            line = ""
            while not line.startswith("ready") and time.monotonic() < deadline:
                line = server.stdout.readline()
                if not line and server.poll() is not None:
                    raise RuntimeError("tree.js exited before it was ready")
            variables = int(line.split()[2])
            seconds, rows = [], 0
            for _ in range(runs):
                out = Path(tmp) / "points.csv"
                start = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "scadawatch", "browse", "opcua", "--endpoint",
                     f"opc.tcp://127.0.0.1:{port}/tree", "--device", "plc1", "--out", str(out)],
                    capture_output=True, text=True, timeout=600, env=os.environ)
                seconds.append(time.perf_counter() - start)
                if done.returncode:
                    raise RuntimeError(done.stderr)
                rows = len(out.read_text(encoding="utf-8").splitlines()) - 1
            summary = done.stderr.strip().splitlines()[0]
        finally:
            server.terminate()
            server.wait(timeout=30)
    median = statistics.median(seconds)
    print(f"server: {variables} variables ({areas} areas + 1,200 flat); points written: {rows}")
    print(f"command: {summary}")
    print(f"wall time per browse (fresh process), {runs} runs: "
          + ", ".join(f"{s:.2f}" for s in seconds) + f" s; median {median:.2f} s, "
          f"{variables / median:,.0f} variables/s")
    print(f"load: {os.getloadavg()[0]:.1f}")
    return {"variables": variables, "points": rows, "seconds": median}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--areas", type=int, default=12, help="800 variables each (default 12)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    run(args.areas, args.runs)


if __name__ == "__main__":
    main()
