"""The report package's layout rules, checked on the source (no import, no model).

* No module of ``soul_bench`` reaches into another module's ``_private`` names: what a module
  offers to others is its public face, so it can change its insides without breaking them.
* No import cycle runs through ``soul_bench.report`` — not even through an import inside a
  function, which only hides the cycle until the two modules are loaded in the other order.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "soul_bench"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, tuple[Path, ast.Module]]:
    return {_module_name(p): (p, ast.parse(p.read_text(encoding="utf-8"), str(p)))
            for p in sorted(PACKAGE.rglob("*.py"))}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def private_uses(name: str, tree: ast.Module, modules: set[str]) -> list[str]:
    """``from soul_bench.x import _y`` and ``alias._y`` where ``alias`` is another soul_bench module."""
    aliases: dict[str, str] = {}  # local name -> module it stands for
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "soul_bench":
                    aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("soul_bench"):
            for a in node.names:
                if f"{node.module}.{a.name}" in modules:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                elif _private(a.name) and node.module != name:
                    found.append(f"line {node.lineno}: from {node.module} import {a.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = _dotted(node.value)
            target = aliases.get(base) if base in aliases else (base if base in modules else None)
            if target is not None and target != name:
                found.append(f"line {node.lineno}: {base}.{node.attr}")
    return found


def import_edges(name: str, tree: ast.Module, modules: set[str]) -> set[str]:
    """Every soul_bench module ``name`` imports, at any depth of the file (lazy imports too)."""
    edges = set()
    package = name if (PACKAGE.parent / Path(*name.split(".")) / "__init__.py").exists() else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            edges.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                edges.add(full if full in modules else base)
    return {e for e in edges if e in modules and e != name}


def test_no_module_uses_another_modules_private_names():
    sources = _sources()
    modules = set(sources)
    offences = {f"{path.relative_to(PACKAGE.parent)}: {use}"
                for name, (path, tree) in sources.items() for use in private_uses(name, tree, modules)}
    assert not offences, "private names used across modules:\n" + "\n".join(sorted(offences))


def test_no_import_cycle_through_the_report_package():
    sources = _sources()
    modules = set(sources)
    graph = {name: import_edges(name, tree, modules) for name, (_, tree) in sources.items()}

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = [c for m in sorted(modules) if m.startswith("soul_bench.report") and (c := cycle_from(m))]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checks_see_what_they_look_for():
    # The scanner itself: a private use and a cycle in made-up modules are found.
    modules = {"soul_bench.a", "soul_bench.b", "soul_bench.c"}
    tree = ast.parse("from soul_bench import b\nfrom soul_bench.c import _x\nimport soul_bench.b as bb\n"
                     "def f():\n    return b._y, bb._z, b.ok, b.__name__\n")
    assert sorted(private_uses("soul_bench.a", tree, modules)) == [
        "line 2: from soul_bench.c import _x", "line 5: b._y", "line 5: bb._z"]
    lazy = ast.parse("def f():\n    from soul_bench.b import thing\n")
    assert import_edges("soul_bench.a", lazy, modules) == {"soul_bench.b"}
