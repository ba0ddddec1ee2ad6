"""The layer rule of docs/architecture.md, checked by reading every module's imports.

The layers come from the doc itself (its table "The layers"), so the doc and the
code cannot drift apart: a package folder the table does not list, or a row
without its folder, fails here; so does a module the table of modules leaves out.
Imports are read with `ast`, function-level and TYPE_CHECKING ones included.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from helpers import REPOSITORY

SOURCE = REPOSITORY / "src" / "patchtool"
ARCHITECTURE = REPOSITORY / "docs" / "architecture.md"
# `patchtool/__init__.py` holds the version only: every layer may read it.
# `patchtool/__main__.py` runs the command line: above every layer.
ROOT_LAYER, MAIN_LAYER = 0, 99


def doc_table(title: str) -> list[list[str]]:
    """The rows of the markdown table under the heading `## <title>`, cells stripped
    of backquotes."""
    text = ARCHITECTURE.read_text()
    start = text.index(f"\n## {title}\n")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if line.startswith("## "):
            break
        if line.startswith("|") and not re.match(r"^\|[\s|:-]+\|$", line):
            rows.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    return rows[1:]  # the header row


def layers() -> dict[str, int]:
    """Package -> layer, from the doc's table of layers."""
    return {row[1].rstrip("/"): int(row[0]) for row in doc_table("The layers")}


@dataclass(frozen=True)
class Import:
    importer: str  # the module, dotted (patchtool.trees.building)
    module: str  # what it imports, dotted
    names: tuple[str, ...]  # the names taken from it ('' for `import x`)
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(SOURCE.rglob("*.py"))}


def imports(name: str, path: Path) -> list[Import]:
    """Every import of patchtool's own modules in `path`. `from patchtool.core
    import children` imports the module patchtool.core.children."""
    known = modules()
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(name, a.name, ("",), node.lineno) for a in node.names
                      if a.name.split(".")[0] == "patchtool"]  # fmt: skip
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: a relative import"
            if (node.module or "").split(".")[0] != "patchtool":
                continue
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in known:
                    found.append(Import(name, submodule, ("",), node.lineno))
                else:
                    found.append(Import(name, node.module or "", (alias.name,), node.lineno))
    return found


def layer_of(module: str, table: dict[str, int]) -> tuple[int, str]:
    """A module's layer and its package (the folder below patchtool/)."""
    parts = module.split(".")
    if module == "patchtool":
        return ROOT_LAYER, ""
    if module == "patchtool.__main__":
        return MAIN_LAYER, ""
    return table[parts[1]], parts[1]


def command_of(module: str) -> str | None:
    """The command a module of commands/ belongs to (a module, or a package such as
    importing/); None for jobs.py, the options every command shares."""
    parts = module.split(".")
    if parts[1] != "commands" or len(parts) < 3 or parts[2] == "jobs":
        return None
    return parts[2]


def all_imports() -> list[Import]:
    return [i for name, path in modules().items() for i in imports(name, path)]


def test_the_doc_lists_every_package_and_module() -> None:
    table = layers()
    folders = {p.name for p in SOURCE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert sorted(table) == sorted(folders)
    listed = {f"{row[0].rstrip('/')}/{row[1]}" for row in doc_table("The modules and their jobs")}
    files = {str(p.relative_to(SOURCE)) for p in SOURCE.rglob("*.py")
             if p.parent != SOURCE and p.name != "__init__.py"}  # fmt: skip
    assert sorted(listed) == sorted(files)


def test_a_package_init_holds_only_its_docstring() -> None:
    """No re-exports: a name is imported from the module that defines it."""
    found = []
    for path in sorted(SOURCE.rglob("__init__.py")):
        if path.parent == SOURCE:
            continue
        body = ast.parse(path.read_text()).body
        if not (len(body) == 1 and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):  # fmt: skip
            found.append(str(path.relative_to(SOURCE)))
    assert found == []


def test_imports_go_down_the_layers_only() -> None:
    """A module imports from its own package or from packages of lower layers; two
    packages of one layer never import each other."""
    table = layers()
    found = []
    for item in all_imports():
        own_layer, own_package = layer_of(item.importer, table)
        layer, package = layer_of(item.module, table)
        if package != own_package and layer >= own_layer:
            found.append(f"{item.importer}:{item.line} imports {item.module} "
                         f"(layer {own_layer} {own_package}/ -> layer {layer} {package}/)")  # fmt: skip
    assert found == []


def test_a_command_imports_no_other_command() -> None:
    found = [
        f"{item.importer}:{item.line} imports {item.module}"
        for item in all_imports()
        if command_of(item.importer) is not None
        and command_of(item.module) is not None
        and command_of(item.module) != command_of(item.importer)
    ]
    assert found == []


def test_no_module_imports_a_private_name_of_another() -> None:
    found = [
        f"{item.importer}:{item.line} imports {name} from {item.module}"
        for item in all_imports()
        for name in item.names
        if name.startswith("_") and not name.startswith("__") and item.module != item.importer
    ]
    # Nor reads one through a module it imported (`children._x`).
    for name, path in modules().items():
        aliases = {alias.asname or alias.name
                   for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("patchtool")
                   for alias in node.names if f"{node.module}.{alias.name}" in modules()}  # fmt: skip
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):  # fmt: skip
                found.append(f"{name}:{node.lineno} reads {node.value.id}.{node.attr}")
    assert found == []


def test_no_import_cycle() -> None:
    """Not even through an import inside a function."""
    graph: dict[str, set[str]] = {name: set() for name in modules()}
    for item in all_imports():
        if item.module != item.importer:
            graph[item.importer].add(item.module)
    # Tarjan's strongly connected components, iteratively.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    assert cycles == []


def test_the_checks_see_what_they_check() -> None:
    """The reading above finds imports at every level, so the rules bite."""
    building = [i.module for i in imports("patchtool.trees.building",
                                          SOURCE / "trees" / "building.py")]  # fmt: skip
    assert "patchtool.trees.staging" in building
    assert "patchtool.core.report" in building
    changes = imports("patchtool.commands.importing.changes",
                      SOURCE / "commands" / "importing" / "changes.py")  # fmt: skip
    # A function-level import (import makes its tree with build_tree).
    assert any(i.module == "patchtool.trees.building" for i in changes)
    assert layer_of("patchtool.cli.app", layers()) == (7, "cli")
    assert layer_of("patchtool.core.errors", layers()) == (1, "core")
    assert command_of("patchtool.commands.importing.flagscale") == "importing"
    assert command_of("patchtool.commands.jobs") is None
