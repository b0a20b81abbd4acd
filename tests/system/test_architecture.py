"""The import rules of docs/architecture.md, read from the code (ast): which package may import
which, no protocol importing another, no cycle. A new import that breaks a rule fails here."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("anomaly", "api", "bench", "central", "gateway", "scadawatch", "simulators",
            "timegrammar")

# (importer, imported it must not import, why): prefixes of dotted module names.
FORBIDDEN = [
    ("anomaly", "gateway", "the engine is pure: it knows no protocol, file or process"),
    ("anomaly", "api", "the engine is pure"),
    ("anomaly", "simulators", "the engine is judged on data it was not written beside"),
    ("anomaly", "scadawatch", "the engine is pure"),
    ("simulators", "anomaly", "the simulators stand alone"),
    ("simulators", "gateway", "the simulators stand alone"),
    ("simulators", "api", "the simulators stand alone"),
    ("gateway", "api", "the API sits on the gateway, not under it"),
    ("gateway", "simulators", "the gateway runs without the simulators installed"),
    ("gateway", "scadawatch", "the CLI composes the gateway, not the reverse"),
    ("api", "simulators", "the API runs without the simulators installed"),
    ("api", "scadawatch", "the CLI composes the API, not the reverse"),
    ("gateway.site", "gateway.inputs", "the site file knows no driver"),
    ("gateway.site", "gateway.storage", "the site file knows no storage"),
    ("gateway.site", "gateway.alarms", "the site file knows no alarm system"),
    ("gateway.site", "gateway.northbound", "the site file knows no transport"),
    ("gateway", "central", "a site's gateway knows nothing of the centre's process"),
    ("api", "central", "the central composes the API, not the reverse"),
    ("central", "scadawatch", "the CLI composes the central, not the reverse"),
    ("central", "simulators", "the central runs without the simulators installed"),
    ("gateway.northbound", "gateway.inputs", "a northbound sink drains the spool, as storage"),
    ("gateway.inputs", "gateway.northbound", "an input emits batches; the runtime spools them"),
    ("gateway.inputs", "gateway.site.rules", "drivers take their vocabulary from the model"),
    ("gateway.inputs", "gateway.site.loader", "drivers get a loaded site"),
    ("gateway.inputs", "gateway.storage", "an input emits batches; the runtime spools them"),
    ("gateway.inputs", "gateway.alarms", "an input knows no alarm system"),
    ("gateway.storage", "gateway.inputs", "storage knows no protocol"),
    ("gateway.storage", "gateway.alarms", "storage knows no alarm system"),
    ("gateway.alarms", "gateway.inputs", "the alarm system knows no protocol"),
    ("gateway.alarms", "gateway.runtime", "the runtime composes the alarm system"),
    ("gateway.storage", "gateway.runtime", "the runtime composes storage"),
    ("gateway.inputs", "gateway.runtime", "the runtime composes the inputs"),
]

# The layers of the packages with concern folders (docs/architecture.md): a module imports its
# own unit (folder or top-level module) and lower layers only, never another unit of its layer.
# A module in no layer (new, not placed yet) is free.
LAYERS = {
    "anomaly": [("anomaly.core", "anomaly.tables"), ("anomaly.water",),
                ("anomaly.tags", "anomaly.grid", "anomaly.zone_score", "anomaly.evaluation"),
                ("anomaly.engine",)],
    "api": [("api.context", "api.encode", "api.times", "api.tokens", "api.server"),
            ("api.models",), ("api.security",), ("api.routes",), ("api.app",)],
    "simulators": [("simulators.scenario", "simulators.signals"),
                   ("simulators.physics", "simulators.servers"), ("simulators.site",),
                   ("simulators.networks", "simulators.sitefile", "simulators.serve"),
                   ("simulators.export",)],
    # cli loads commands/ by name strings, not imports: commands import cli, never the reverse
    "scadawatch": [("scadawatch.cli", "scadawatch.ports"), ("scadawatch.commands",),
                   ("scadawatch.__main__",)],
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def import_graph() -> dict[str, frozenset[str]]:
    """module -> the modules of ours it imports (TYPE_CHECKING and function-level included)."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, frozenset[str]] = {}
    for name, path in files.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from gateway.inputs import quality` imports the module gateway.inputs.quality
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    targets.add(sub if sub in files else node.module)
        graph[name] = frozenset(t for t in targets if t in files and t != name)
    return graph


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_the_graph_is_read() -> None:
    """A parser that found nothing would pass every rule: check edges we know are there."""
    graph = import_graph()
    assert "gateway.inputs.modbus.bus" in graph["gateway.runtime"]
    assert "gateway.inputs.backoff" in graph["gateway.inputs.opcua.session"]
    assert "gateway.inputs.quality" in graph["gateway.inputs.modbus.bus"]  # `from x import mod`
    assert "anomaly.water.tank_ends" in graph["anomaly.tags.drift"]
    assert "api.security.auth" in graph["api.routes.alarms"]
    assert "simulators.servers.registers" in graph["simulators.site"]
    assert "scadawatch.commands.serve" in graph["scadawatch.commands.token"]


@pytest.mark.parametrize(("importer", "imported", "why"), FORBIDDEN,
                         ids=[f"{a}-/->{b}" for a, b, _ in FORBIDDEN])
def test_forbidden_import(importer: str, imported: str, why: str) -> None:
    found = sorted(f"{m} imports {t}" for m, ts in import_graph().items() if _under(m, importer)
                   for t in ts if _under(t, imported))
    assert not found, f"{why}:\n" + "\n".join(found)


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_folders_import_down_their_layers(package: str) -> None:
    def place(module: str) -> tuple[int, str] | None:
        return next(((rank, unit) for rank, units in enumerate(LAYERS[package])
                     for unit in units if _under(module, unit)), None)

    found = sorted(f"{m} imports {t}" for m, ts in import_graph().items() if (here := place(m))
                   for t in ts if (there := place(t)) and there[1] != here[1]
                   and there[0] >= here[0])
    assert not found, f"{package}'s folders import one way, {LAYERS[package][0]} first:\n" + (
        "\n".join(found))


def test_no_protocol_imports_another() -> None:
    def protocol(module: str) -> str | None:
        parts = module.split(".")
        is_plugin = len(parts) > 3 and parts[:2] == ["gateway", "inputs"]
        return parts[2] if is_plugin else None

    found = sorted(f"{m} imports {t}" for m, ts in import_graph().items() if protocol(m)
                   for t in ts if protocol(t) not in (None, protocol(m)))
    assert not found, "\n".join(found)


def test_no_import_cycle() -> None:
    graph = import_graph()
    # Tarjan's strongly connected components: a component of two or more modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles
