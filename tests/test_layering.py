"""The package's layering: cli -> api -> pipeline -> backends -> stages -> foundations.

Every import counts, also the ones inside functions (the package imports heavy libraries
lazily, but a lazy import of an upper layer is still a dependency on it). A module may import
its own layer or lower ones, never an upper one, and no set of modules may import each other
in a cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import apprentice_hw

PACKAGE = Path(apprentice_hw.__file__).parent

# Top-level modules and packages of apprentice_hw by layer, lowest first.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("foundations", frozenset({
        "version", "errors", "registry", "atomic", "progress", "resources", "outputs",
        "brevitas_compat", "torch_backend", "hardware", "config", "remote", "artifacts",
        "output_steps", "options", "build_state", "report_model", "data", "models", "quant",
    })),
    ("stages", frozenset({
        "distill", "training", "export", "lowering", "compiler", "fpga", "report", "deploy",
        "build_dir", "manifest",
    })),
    ("backends", frozenset({"backends"})),
    ("pipeline", frozenset({"pipeline", "compile_onnx", "verify"})),
    ("api", frozenset({"api", "__init__"})),
    ("cli", frozenset({"cli", "__main__"})),
)  # fmt: skip


def _modules() -> dict[str, Path]:
    """Dotted name (``apprentice_hw.x.y``) -> file, for every module of the package."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            # ``from pkg import sub`` depends on the submodule; ``from pkg import name`` on pkg
            # (a package's ``__init__`` importing its own submodules is not a cycle).
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for index, (_, members) in enumerate(LAYERS):
        if top in members:
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def test_every_module_has_a_layer():
    for module in _graph():
        _layer(module)


def test_no_module_imports_an_upper_layer():
    violations = [
        f"{module} ({LAYERS[_layer(module)][0]}) imports {imported} ({LAYERS[_layer(imported)][0]})"
        for module, imports in _graph().items()
        for imported in sorted(imports)
        if _layer(imported) > _layer(module)
    ]
    assert not violations, "\n".join(violations)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    """The check above can fail: a planted cycle is reported."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_only_the_backends_ask_which_kind_of_device_a_target_is():
    pattern = re.compile(r"\bdevice\s*(==|!=)|\.device\s+(not\s+)?in\b")
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        if "backends" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert not offenders, "\n".join(offenders)


def test_one_output_step_comparison():
    """Outputs are compared in steps in ``output_steps`` only (the bundle's standalone
    ``run.py`` aside: it runs on a board without this package)."""
    pattern = re.compile(r"np\.abs\(.*-.*\).*/ *(self\.)?step\b|/ *step\)")
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        if path.name not in ("output_steps.py", "run.py")
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert not offenders, "\n".join(offenders)
