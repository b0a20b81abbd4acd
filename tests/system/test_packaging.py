"""What a field gateway installs and imports: the core stays free of the simulators' weight,
and the packages depend on each other one way only (DESIGN.md)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"wntr", "pandapower", "pandas", "scipy"}
# package -> the packages of ours it may import; `timegrammar` (durations and relative times,
# one grammar everywhere) is a leaf every package may use
ALLOWED = {
    "timegrammar": set(),
    "simulators": {"timegrammar"},
    "anomaly": {"timegrammar"},
    "gateway": {"anomaly", "timegrammar"},
    "api": {"gateway", "anomaly", "timegrammar"},
    "scadawatch": {"simulators", "anomaly", "gateway", "api", "timegrammar"},
}


def requirement_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;(]", req, maxsplit=1)[0].lower().replace("_", "-")


def closure(names: set[str]) -> set[str]:
    """Every distribution the named ones pull in, as pip would install them (no extras)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [requirement_name(r) for r in requires if "extra ==" not in r]
    return seen


def test_core_install_pulls_no_simulator_or_science_stack() -> None:
    core = {requirement_name(r)
            for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
            ["dependencies"]}
    assert closure(core) & HEAVY == set()


def test_gateway_commands_import_no_simulator_stack() -> None:
    code = ("import sys, scadawatch.cli, scadawatch.commands.serve, scadawatch.commands.check, "
            "gateway.runtime, api.app; "
            f"print(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.strip()
    assert out == "[]"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_dependencies_flow_one_way(package: str) -> None:
    ours = set(ALLOWED)
    wrong = {f"{path.relative_to(ROOT)} imports {name}"
             for path in (ROOT / package).rglob("*.py")
             for name in imports_of(path) & ours - ALLOWED[package] - {package}}
    assert not wrong
