"""Helpers for the MetaX C550 series tests: load single vLLM source files by
path, without importing the ``vllm`` package (its __init__ needs many
packages that are not installed here)."""

import ast
import importlib.util
import itertools
import sys
from pathlib import Path
from types import ModuleType

_counter = itertools.count()

FUSED_MOE = Path("vllm/model_executor/layers/fused_moe")
CONFIGS = FUSED_MOE / "configs"


def load_by_path(path: Path, name: str | None = None) -> ModuleType:
    """Execute the file at ``path`` as a fresh module (not kept in
    sys.modules, so every call gives new module state)."""
    name = name or f"c550_{Path(path).stem}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses/typing may look it up
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


def load_envs(tree: Path) -> ModuleType:
    return load_by_path(tree / "vllm" / "envs.py")


def find_function(path: Path, name: str,
                  cls: str | None = None) -> ast.FunctionDef:
    """The top-level (or ``cls``-level) function ``name`` in ``path``."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    body = tree.body
    if cls is not None:
        (klass,) = [n for n in body
                    if isinstance(n, ast.ClassDef) and n.name == cls]
        body = klass.body
    (func,) = [n for n in body
               if isinstance(n, ast.FunctionDef) and n.name == name]
    return func
