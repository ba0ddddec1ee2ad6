"""Make a vLLM source tree's fused-MoE code importable in every Python
process of a GPU machine that has no vLLM build (Ray workers included).

With this folder on PYTHONPATH and C550_VLLM_TREE naming a tree, Python
imports this module at start-up. It installs an import hook, and the first
`import vllm...` in a process loads the tree through
tests/metax_c550/vllm_loader.py (package shells, the tree's real
fused_moe.py, pure-torch stand-ins for the compiled ops). Ray starts its
workers with the driver's environment, so the tuner's tasks and actors
import `vllm` exactly as the driver does. The hook is lazy on purpose:
Ray's own helper processes (dashboard, agents, idle workers) never import
vllm, and loading torch in each of them at start-up delays the node past
Ray's start-up deadline. Without C550_VLLM_TREE it does nothing.
"""
import importlib.abc
import importlib.machinery
import os
import sys


class _Existing(importlib.abc.Loader):
    """Hands the import system the package shell vllm_loader registered."""

    def create_module(self, spec):
        return sys.modules[spec.name]

    def exec_module(self, module):
        pass


class _TreeFinder(importlib.abc.MetaPathFinder):
    def __init__(self, tree: str, loader_dir: str) -> None:
        self.tree, self.loader_dir = tree, loader_dir

    def find_spec(self, name, path=None, target=None):
        if name != "vllm":
            return None
        sys.meta_path.remove(self)
        sys.path.insert(0, self.loader_dir)
        import vllm_loader

        vllm_loader.load_fused_moe(self.tree)
        return importlib.machinery.ModuleSpec(
            "vllm", _Existing(), is_package=True)


_tree = os.environ.get("C550_VLLM_TREE")
if _tree and "vllm" not in sys.modules:
    sys.meta_path.insert(0, _TreeFinder(_tree, os.environ["C550_LOADER_DIR"]))
