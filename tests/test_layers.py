"""The package's layers import only downward, and no module imports itself back in a circle.

Every ``import`` in the package, at module level or inside a function, is read from the source
(``ast``) and checked against the layer order below (docs/architecture.md draws it). A module
may import its own layer and the layers under it; ``stores.redis`` and ``stores.sqlite`` never
import each other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import merlin_tracking

PACKAGE = Path(merlin_tracking.__file__).resolve().parent
ROOT = "merlin_tracking"

# Bottom first. A module's layer is the longest entry that prefixes its name.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "ids", "urls", "version", "schedulers"),
    ("identity",),
    ("records",),
    ("stores.base",),
    ("stores.redis", "stores.sqlite", "stores"),
    ("managers",),
    ("database",),
    ("resolvers",),
    ("config",),
    ("signals", "beacon", "requeue", "cancel", "drain"),
    ("cli", "web"),  # web/ builds on the CLI's documents; cli/serve.py starts it
    ("celery_command",),
    ("",),  # the package root re-exports the public API (and imports the Celery glue lazily)
)
SIBLINGS_APART = ("stores.redis", "stores.sqlite")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([ROOT, *parts])


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> tuple[int, str]:
    """(rank, layer entry) of a package module."""
    local = module[len(ROOT) + 1 :] if module != ROOT else ""
    best: tuple[int, str] | None = None
    for rank, entries in enumerate(LAYERS):
        for entry in entries:
            if (local == entry or local.startswith(entry + ".") or entry == "") and (
                best is None or len(entry) > len(best[1])
            ):
                best = (rank, entry)
    assert best is not None, module
    return best


def imported_modules(module: str) -> Iterator[tuple[str, int]]:
    """(imported package module, line) for every import statement of ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(ROOT):
                    yield _existing(alias.name), node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base]) if base else ".".join(parent)
            if not base.startswith(ROOT):
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                # ``from pkg import submodule`` imports the submodule; anything else is a name
                # that ``base`` itself provides.
                yield (candidate if candidate in MODULES else _existing(base)), node.lineno


def _existing(name: str) -> str:
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def test_every_module_sits_in_a_layer() -> None:
    assert len(MODULES) > 40
    for module in MODULES:
        layer_of(module)


def test_imports_go_only_downward() -> None:
    upward = []
    for module in sorted(MODULES):
        rank, entry = layer_of(module)
        for target, line in imported_modules(module):
            target_rank, target_entry = layer_of(target)
            if target_rank > rank:
                upward.append(f"{module}:{line} imports {target} ({target_entry} is above {entry})")
            elif {entry, target_entry} == set(SIBLINGS_APART):
                upward.append(f"{module}:{line} imports {target} (the stores are siblings)")
    assert upward == []


def test_no_import_circle() -> None:
    graph = {module: {t for t, _ in imported_modules(module) if t != module} for module in MODULES}
    state: dict[str, str] = {}
    circles: list[list[str]] = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                circles.append([*trail[trail.index(target) :], target])
            elif target not in state:
                visit(target, [*trail, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_the_checks_see_real_imports() -> None:
    """The import reader finds what it must (else the tests above could pass on nothing)."""
    found = {target for target, _ in imported_modules(f"{ROOT}.signals.tracker")}
    assert {f"{ROOT}.identity", f"{ROOT}.database", f"{ROOT}.config"} <= found
    assert layer_of(f"{ROOT}.stores.redis.store")[1] == "stores.redis"
    assert layer_of(f"{ROOT}.stores.base")[0] < layer_of(f"{ROOT}.stores.sqlite.store")[0]
