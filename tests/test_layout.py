"""The code's shape: no import circles, dependencies one way (export -> calibration -> runtime;
the CLI is the one face that may import everything), no module over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("edge_agent", "calibration", "export")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Every project module each module imports, at any depth of its code (function-level too)."""
    graph = {}
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                found |= {base} | {f"{base}.{a.name}" for a in node.names}
        graph[name] = {m for m in found if m in mods and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert _cycles(_imports(_modules())) == []


def test_dependencies_point_one_way():
    graph = _imports(_modules())
    wrong = []
    for m, deps in graph.items():
        for d in deps:
            if m.startswith("edge_agent") and not m.startswith("edge_agent.cli") and d.split(".")[0] != "edge_agent":
                wrong.append(f"{m} -> {d} (the runtime imports only itself; wire through edge_agent.cli)")
            if m.startswith("calibration") and d.startswith(("export", "edge_agent.cli")):
                wrong.append(f"{m} -> {d}")
    assert not wrong, "\n".join(wrong)


STAGES = ("audio", "model", "engine", "scoring", "alarms", "runtime", "state", "publish", "health", "web", "cli")
MAX_TOP_MODULES = 12


def test_the_runtime_stages_are_subpackages():
    for sub in STAGES:
        assert (ROOT / "edge_agent" / sub / "__init__.py").is_file(), sub
    top = sorted(p.name for p in (ROOT / "edge_agent").glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top


def test_audio_knows_nothing_of_models():
    """audio/ cuts and carries sound; the front end, engines and banks build on it, never the reverse."""
    graph = _imports(_modules())
    wrong = [
        f"{m} -> {d}"
        for m, deps in graph.items()
        if m.startswith("edge_agent.audio")
        for d in deps
        if d.startswith(("edge_agent.model", "edge_agent.engine", "edge_agent.scoring", "edge_agent.runtime"))
    ]
    assert not wrong, "\n".join(wrong)


def test_no_module_over_400_lines():
    long = {
        str(p.relative_to(ROOT)): n for p in _modules().values() if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long
