"""The import graph of eip_al/: no cycle, no Prefect, and who may import whom (docs/architecture.md).

Every import counts: module-level, inside functions (the "lazy" imports that only defer
torch) and under TYPE_CHECKING. A lazy import hides a cycle from the interpreter, not from
the reader, so it is a cycle here. `from pkg import name` is an edge to the submodule
`pkg.name` when there is one, else to `pkg` itself (its __init__); a module's parent
packages, which Python runs first anyway, are not edges of their own.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "eip_al"

# Layers, lowest first: a module may import its own layer or a lower one, never a higher one.
LAYERS: dict[str, int] = {
    # 0 contracts and plumbing
    "eip_al": 0, "eip_al.atomic": 0, "eip_al.schemas": 0, "eip_al.config": 0, "eip_al.metrics": 0,
    "eip_al.io": 0, "eip_al.systems": 0, "eip_al.progress": 0, "eip_al.mdstate": 0, "eip_al.registries": 0,
    # 1 pure science on arrays; the run directory
    "eip_al.uq": 1, "eip_al.rundir": 1, "eip_al.integrity": 1, "eip_al.screening": 1,
    # 2 the model and its calculator
    "eip_al.model": 2, "eip_al.calculator": 2,
    # 3 the steps
    "eip_al.seed": 3, "eip_al.fit": 3, "eip_al.train": 3, "eip_al.explore": 3, "eip_al.select": 3, "eip_al.label": 3,
    "eip_al.data": 3, "eip_al.audit": 3, "eip_al.stop": 3,
    # 4 the report reads every step
    "eip_al.report": 4,
    # 5 orchestration; 6 the command line
    "eip_al.pipeline": 5, "eip_al.preflight": 5, "eip_al.serving": 5, "eip_al.cli": 6,
}


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """eip_al module → the eip_al modules it imports anywhere in its source."""
    mods = modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                found = owner(t) if t.split(".")[0] == "eip_al" else None
                if found and found != mod:
                    graph[mod].add(found)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state and (cycle := visit(w)):
                return cycle
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (cycle := visit(v)):
            return cycle
    return None


def layer(mod: str) -> int:
    while mod not in LAYERS:
        mod = mod.rpartition(".")[0]
    return LAYERS[mod]


def test_no_import_cycle_in_eip_al() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_the_cycle_check_sees_lazy_imports() -> None:
    graph = {"a": {"b"}, "b": {"a"}}
    assert find_cycle(graph) == ["a", "b", "a"]
    # the calculator's calibration comes from uq; the audit imports the calculator lazily
    real = import_graph()
    assert "eip_al.uq" in real["eip_al.calculator"] and "eip_al.calculator" in real["eip_al.audit"]


def test_imports_follow_the_layers() -> None:
    wrong = [f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
             for m, targets in import_graph().items() for t in targets
             if layer(t) > layer(m) and not t.startswith(m + ".")]
    assert not wrong, "\n".join(wrong)


def test_library_never_imports_prefect() -> None:
    """Only the command line (eip_al/cli: `eip-al run`'s ephemeral server, cancellation) and
    flows/ touch Prefect; every step runs without it."""
    for mod, path in modules().items():
        if mod.startswith("eip_al.cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "prefect" for n in names), mod


def test_no_module_over_600_lines_and_report_sections_small() -> None:
    """One room per concept: no module over 600 lines; each report section ≤ 200 lines."""
    sizes = {mod: len(path.read_text().splitlines()) for mod, path in modules().items()}
    assert not {m: n for m, n in sizes.items() if n > 600}
    sections = {m: n for m, n in sizes.items() if m.startswith("eip_al.report.sections.")}
    assert len(sections) >= 9 and max(sections.values()) <= 200, sections
