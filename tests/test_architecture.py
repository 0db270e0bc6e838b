"""The house rules of ARCHITECTURE.md, checked on the source: no import cycles, every import goes
down the layers, few modules at the package root, none too long, every package says its job.

Imports are read from the source (every `import` statement, also those inside functions, which
still run; not those under `if TYPE_CHECKING:`), so no module is executed to check them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "qwen_edge"
MAX_LINES = 500
MAX_ROOT_MODULES = 6  # __init__ included

FOUNDATION = {"qwen_edge", "errors", "closed", "precision", "worker_threads"}
# What each unit (a package, or a module at the root) may import besides itself; see ARCHITECTURE.md.
ALLOWED: dict[str, set[str]] = {
    "qwen_edge": set(),
    "errors": set(),
    "worker_threads": set(),
    "closed": {"errors"},
    "precision": {"errors", "closed"},
    "checkpoint": FOUNDATION,
    "arch": FOUNDATION,
    "bundle": {"errors", "worker_threads"},
    "runtime": {"qwen_edge", "errors", "bundle"},
    "serve": {"qwen_edge", "errors", "runtime"},
    "verify": FOUNDATION | {"checkpoint", "arch", "bundle", "runtime"},
    "quant": FOUNDATION | {"checkpoint", "arch", "bundle", "verify"},
    "graph": FOUNDATION | {"checkpoint", "arch", "quant"},
    "targets": FOUNDATION | {"checkpoint", "arch", "bundle", "runtime", "verify", "quant", "graph"},
    "build": FOUNDATION | {"checkpoint", "arch", "bundle", "runtime", "verify", "quant", "graph", "targets"},
    "pipeline": FOUNDATION | {"checkpoint", "arch", "bundle", "runtime", "verify", "quant", "graph", "targets",
                              "build"},
    "demo": FOUNDATION | {"checkpoint", "runtime", "targets", "build"},
    "cli": FOUNDATION | {"checkpoint", "arch", "bundle", "runtime", "verify", "quant", "graph", "targets", "build",
                         "pipeline", "demo", "serve"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str) -> set[str]:
    """The qwen_edge modules `name` imports (a package's __init__ counts as the package)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        for target in targets:
            while target and target not in MODULES:  # `import a.b.c` of a module: its deepest module
                target = target.rpartition(".")[0]
            if target.startswith("qwen_edge") and target != name:
                found.add(target)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "qwen_edge"


def test_the_reader_finds_relative_absolute_and_function_level_imports():
    assert "qwen_edge.bundle.manifest" in GRAPH["qwen_edge.runtime.model"]  # from ..bundle import manifest
    assert "qwen_edge.targets.catalog" in GRAPH["qwen_edge.targets.schema"]  # inside a function
    assert "qwen_edge.verify.metrics" in GRAPH["qwen_edge.quant.mixed_precision"]


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
    return cycles


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} imports {t}" for m, targets in graph.items() for t in targets
                  if unit(t) != unit(m) and unit(t) not in ALLOWED[unit(m)])


def test_the_checks_catch_a_cycle_and_an_upward_import():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    upward = {"qwen_edge.runtime.model": {"qwen_edge.build.run"}, "qwen_edge.build.run": {"qwen_edge.runtime.model"}}
    assert layer_violations(upward) == ["qwen_edge.runtime.model imports qwen_edge.build.run"]


def test_no_import_cycles():
    cycles = find_cycles(GRAPH)
    assert not cycles, f"import cycles: {cycles}"


def test_every_import_goes_down_the_layers():
    assert set(ALLOWED) == {unit(m) for m in MODULES}, "a new package or root module needs its row in ALLOWED"
    wrong = layer_violations(GRAPH)
    assert not wrong, wrong


def test_the_issue_rules_hold_within_the_table():
    build_side = {"checkpoint", "arch", "graph", "quant", "verify", "targets", "build", "pipeline", "cli", "demo"}
    assert not ALLOWED["runtime"] & build_side
    assert not ALLOWED["serve"] & build_side  # the server serves what the runtime loads, nothing more
    for low in ("checkpoint", "arch", "graph", "quant"):
        assert not ALLOWED[low] & {"cli", "pipeline", "build"}


def test_few_modules_at_the_root_and_none_too_long():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, root
    long = {name: n for name, p in MODULES.items() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long


@pytest.mark.parametrize("package", sorted(n for n, p in MODULES.items() if p.name == "__init__.py"))
def test_every_package_says_its_job_and_what_it_may_import(package):
    doc = ast.get_docstring(ast.parse(MODULES[package].read_text(encoding="utf-8")))
    assert doc and len(doc.split()) >= 8, f"{package}: no docstring saying its job"
    if package.count(".") == 1:  # a top-level package: its row of ALLOWED in words
        assert "import" in doc.lower(), f"{package}: the docstring does not say what it may import"


def test_every_test_directory_is_collected(pytestconfig):
    # tests/ mirrors qwen_edge/, and pytest's default norecursedirs holds "build": tests/build/ was
    # silently never collected in a whole-suite run.
    from fnmatch import fnmatch

    skipped = pytestconfig.getini("norecursedirs")
    tests = Path(__file__).resolve().parent
    for directory in (p for p in tests.rglob("*") if p.is_dir() and p.name != "__pycache__"):
        assert not any(fnmatch(directory.name, pattern) for pattern in skipped), directory.relative_to(tests)
