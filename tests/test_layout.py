"""The layout rules of DESIGN.md hold in the source: the library imports neither Beam nor Ray,
the pipelines never reach into the command line or the Ray jobs, and the Ray jobs never into
the pipelines."""
from tests import import_graph


def test_no_import_crosses_the_layout():
    assert import_graph.violations() == []


def test_the_graph_sees_imports_inside_functions_and_relative_ones(tmp_path):
    import ast

    tree = ast.parse("def f():\n    from ray_jobs import infer\nfrom . import storage\n"
                     "from dfd import cli\n")
    found = import_graph._imported(tree, "dfd.sync", is_package=False)
    assert {"ray_jobs", "dfd.storage", "dfd.cli"} <= found
    assert {import_graph.node_of(m) for m in found} >= {"ray_jobs", "dfd", "dfd.cli"}


def test_the_documented_graph_is_the_sources():
    text = (import_graph.ROOT / "docs" / "layout.md").read_text()
    documented = text.split("```mermaid\n", 1)[1].split("```", 1)[0].strip()
    assert documented == import_graph.mermaid()
