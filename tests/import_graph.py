"""The import graph of dfd's packages, read from the source with ``ast`` (nothing is imported).

    .venv/bin/python -m tests.import_graph            # one line per package: what it imports
    .venv/bin/python -m tests.import_graph --mermaid  # the same as a Mermaid flowchart

Nodes are our top-level packages, with ``dfd.cli`` apart from the rest of ``dfd`` (the command
line is the one place in ``dfd`` that launches Beam and Ray jobs), plus the outside frameworks
the layout rules are about (``apache_beam``, ``ray``). An edge counts every import in a module,
at its top or inside a function.
"""
from __future__ import annotations

import argparse
import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dfd", "schemas", "pipelines", "ray_jobs")
FRAMEWORKS = ("apache_beam", "ray")

# (from, to) pairs that must never appear (DESIGN.md's layout table and issue 19).
FORBIDDEN = (("dfd", "apache_beam"), ("dfd", "ray"), ("dfd", "pipelines"), ("dfd", "ray_jobs"),
             ("schemas", "dfd"), ("pipelines", "dfd.cli"), ("pipelines", "ray_jobs"),
             ("ray_jobs", "pipelines"), ("ray_jobs", "dfd.cli"), ("ray_jobs", "apache_beam"),
             ("pipelines", "ray"), ("dfd.cli", "apache_beam"), ("dfd.cli", "ray"))


def node_of(module: str) -> str | None:
    """The graph node of a dotted module name, or None for modules outside the graph."""
    top = module.split(".")[0]
    if module == "dfd.cli" or module.startswith("dfd.cli."):
        return "dfd.cli"
    if top in PACKAGES or top in FRAMEWORKS:
        return top
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            # `from dfd import cli` imports dfd.cli
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def module_edges() -> dict[str, dict[str, set[str]]]:
    """{from node: {to node: the modules of ours that import it}}."""
    edges: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = _module_name(path)
            source = node_of(module)
            tree = ast.parse(path.read_text(), filename=str(path))
            for name in _imported(tree, module, path.name == "__init__.py"):
                target = node_of(name)
                if target and target != source:
                    edges[source][target].add(module)
    return edges


def violations() -> list[str]:
    edges = module_edges()
    out = []
    for source, target in FORBIDDEN:
        for module in sorted(edges.get(source, {}).get(target, ())):
            out.append(f"{module} imports {target}")
    return out


def mermaid() -> str:
    lines = ["flowchart LR"]
    for source, targets in sorted(module_edges().items()):
        for target in sorted(targets):
            a, b = (n.replace(".", "_") for n in (source, target))
            lines.append(f"  {a}[{source}] --> {b}[{target}]")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mermaid", action="store_true")
    args = parser.parse_args()
    if args.mermaid:
        print(mermaid())
        return
    for source, targets in sorted(module_edges().items()):
        print(f"{source:10} -> {', '.join(sorted(targets))}")
    bad = violations()
    print("layout rules: " + ("kept" if not bad else "BROKEN: " + "; ".join(bad)))


if __name__ == "__main__":
    main()
