"""Load a vLLM source tree's fused-MoE module without importing vLLM whole.

``vllm/__init__.py`` (and the ``__init__`` of ``vllm.model_executor``,
``...layers``, ``...layers.quantization`` and ``...layers.fused_moe``) pull
in the engine, the distributed stack and many third-party packages that the
fused-MoE kernel does not use. Instead of faking any of the code, this
module registers *package shells* for those five packages: empty module
objects whose ``__path__`` points at the tree's folder. Python then loads
every real submodule (``fused_moe.py``, ``envs.py``, ``_custom_ops.py``,
``platforms``, ``utils.py``, ``fp8_utils.py``, ...) from the tree itself.

Three things are not the tree's code as written, kept to the minimum:

* The fused_moe package shell carries ``get_config`` / ``override_config``,
  the two helpers of ``vllm/model_executor/layers/fused_moe/__init__.py``
  that ``fused_moe.py`` calls (that ``__init__`` cannot run here because it
  imports ``layer.py``). They behave like the real ones.
* ``quantization/qqq.py`` is imported by ``quant_utils.py`` (via
  ``fp8_utils.py``) for one constant, but itself imports ``linear.py`` and
  with it ``vllm.distributed``, ``vllm.sequence`` and ``transformers``. It
  is registered as a partial module holding only qqq.py's top-level literal
  constants, read from the tree's file with ``ast`` (no values invented).
* vLLM's compiled ops (``torch.ops._C.silu_and_mul``, the two
  ``cutlass_scaled_mm_supports_*`` queries that w8a8_utils.py makes at
  import time on CUDA (answered False),
  ``torch.ops._moe_C.moe_align_block_size`` / ``sgl_moe_align_block_size`` /
  ``moe_sum``) do not exist without a built vLLM, and vLLM 0.7.2 has no
  Python fallback for them on this path. ``install_compiled_op_standins``
  registers pure-torch stand-ins under the same names. They replace the
  compiled ops only; the Triton kernels, ``invoke_fused_moe_kernel`` and
  ``fused_experts_impl`` are the tree's real code. Where the tree has no
  built extension, an empty ``vllm._C`` module is registered too, because
  ``vllm/platforms/cuda.py`` imports it only to trigger that op
  registration (this is what makes the CUDA platform loadable on a GPU).

For vLLM >= 0.8 two more modules are not loaded from the tree, because the
real ones import ``transformers`` (and, for config.py, the model registry,
the sampling and tracing code and much of the engine), none of which the
fused-MoE path uses:

* ``vllm.inputs`` (imported by platforms/interface.py for two type aliases)
  is a package shell holding the real ``vllm/inputs/data.py`` and its
  public names; registry.py (InputRegistry, INPUT_REGISTRY, ...) is not
  loaded. Only registered when the tree's inputs/registry.py imports
  transformers.
* ``vllm.config`` (imported by quantization/utils/w8a8_utils.py) is a
  partial module: the tree's ``CompilationLevel`` constants read with
  ``ast`` and a ``get_current_vllm_config`` that raises (only Fp8LinearOp
  calls it). Only registered when the tree's w8a8_utils.py imports
  vllm.config (not in 0.7.x).

vLLM 0.8.5 logs "Triton module has been replaced with a placeholder" at
import: vllm/triton_utils/importing.py prints that whenever ``triton`` is
in sys.modules, even when it is the real one. The placeholder is only
installed when ``find_spec("triton")`` fails; with triton installed
HAS_TRITON is True and fused_moe.py gets the real triton (the message is
an upstream logging slip, not a replacement).

Third-party packages needed beyond torch/triton/numpy: cloudpickle, psutil,
pyyaml, pyzmq (imported at the top of vllm/utils.py), and for vLLM >= 0.8
cachetools (also vllm/utils.py) and typing_extensions (inputs/data.py; a
dependency of torch).

One tree at a time: the modules are registered under the name ``vllm``.
Loading another tree unloads the first (``unload``: its modules leave
sys.modules and the operators its code registered with torch.library are
removed), so the tests can run on several bases in one process; a module
object from an earlier load must not be used after that. To compare two
trees side by side, run one in a subprocess:
``python vllm_loader.py --run-case TREE IN.pt OUT.pt`` runs one
``fused_experts_impl`` call saved by ``save_case``.
"""
from __future__ import annotations

import ast
import contextlib
import importlib
import os
import sys
import types
from pathlib import Path
from typing import Any

import torch

SHELL_PACKAGES = (
    "vllm",
    "vllm.model_executor",
    "vllm.model_executor.layers",
    "vllm.model_executor.layers.quantization",
    "vllm.model_executor.layers.fused_moe",
)
FUSED_MOE_MODULE = "vllm.model_executor.layers.fused_moe.fused_moe"

_loaded_tree: Path | None = None


# --------------------------------------------------------------------------
# Stand-ins for vLLM's compiled ops (only used where vllm._C is absent).
# --------------------------------------------------------------------------
def _silu_and_mul(out: torch.Tensor, x: torch.Tensor) -> None:
    # Same contract as csrc/activation_kernels.cu: out = silu(x[:d]) * x[d:],
    # computed in fp32 and rounded once to out's dtype.
    d = x.shape[-1] // 2
    xf = x.float()
    out.copy_(torch.nn.functional.silu(xf[..., :d]) * xf[..., d:])


def _moe_align_block_size(topk_ids: torch.Tensor, num_experts: int,
                          block_size: int, sorted_token_ids: torch.Tensor,
                          experts_ids: torch.Tensor,
                          num_tokens_post_pad: torch.Tensor) -> None:
    # Same contract as csrc/moe/moe_align_sum_kernels.cu: group the flat
    # (token, k) indices by expert, pad every expert's group to a multiple
    # of block_size, and record the expert of each block. The caller has
    # filled sorted_token_ids with topk_ids.numel() (the padding value).
    flat = topk_ids.flatten().long()
    counts = torch.bincount(flat, minlength=num_experts)
    padded = (counts + block_size - 1) // block_size * block_size
    starts = torch.cumsum(padded, 0) - padded
    order = torch.argsort(flat, stable=True)
    experts_sorted = flat[order]
    first_of_expert = torch.cumsum(counts, 0) - counts
    rank = torch.arange(flat.numel(), device=flat.device) - \
        first_of_expert[experts_sorted]
    sorted_token_ids[starts[experts_sorted] + rank] = order.to(
        sorted_token_ids.dtype)
    blocks = torch.repeat_interleave(
        torch.arange(num_experts, device=flat.device), padded // block_size)
    experts_ids[:blocks.numel()] = blocks.to(experts_ids.dtype)
    num_tokens_post_pad.fill_(int(padded.sum()))


def _moe_sum(inp: torch.Tensor, out: torch.Tensor) -> None:
    out.copy_(inp.sum(dim=1))


def _no_cutlass(cuda_device_capability: int) -> bool:
    # w8a8_utils.py asks these at import time on CUDA; without a built
    # vLLM there are no CUTLASS kernels, so the honest answer is False.
    return False


_standin_libs = []


def install_compiled_op_standins() -> None:
    """Register the pure-torch stand-ins unless real ops already exist."""
    def have(ns: str, name: str) -> bool:
        try:
            getattr(getattr(torch.ops, ns), name)
            return True
        except (AttributeError, RuntimeError):
            return False

    specs = [
        ("_C", "silu_and_mul", "(Tensor(a!) out, Tensor input) -> ()",
         _silu_and_mul),
        ("_moe_C", "moe_align_block_size",
         "(Tensor topk_ids, int num_experts, int block_size, "
         "Tensor(a!) sorted_token_ids, Tensor(b!) experts_ids, "
         "Tensor(c!) num_tokens_post_pad) -> ()", _moe_align_block_size),
        ("_moe_C", "sgl_moe_align_block_size",
         "(Tensor topk_ids, int num_experts, int block_size, "
         "Tensor(a!) sorted_token_ids, Tensor(b!) experts_ids, "
         "Tensor(c!) num_tokens_post_pad) -> ()", _moe_align_block_size),
        ("_moe_C", "moe_sum", "(Tensor input, Tensor(a!) output) -> ()",
         _moe_sum),
        ("_C", "cutlass_scaled_mm_supports_fp8",
         "(int cuda_device_capability) -> bool", _no_cutlass),
        ("_C", "cutlass_scaled_mm_supports_block_fp8",
         "(int cuda_device_capability) -> bool", _no_cutlass),
    ]
    for ns, name, schema, fn in specs:
        if have(ns, name):
            continue
        lib = torch.library.Library(ns, "FRAGMENT")
        lib.define(name + schema)
        lib.impl(name, fn, "CompositeExplicitAutograd")
        _standin_libs.append(lib)


# --------------------------------------------------------------------------
# Package shells
# --------------------------------------------------------------------------
def _add_fused_moe_config_helpers(pkg: types.ModuleType) -> None:
    # Behaves like get_config / override_config in the real
    # vllm/model_executor/layers/fused_moe/__init__.py.
    pkg._config = None

    @contextlib.contextmanager
    def override_config(config: dict[str, Any] | None):
        old = pkg._config
        pkg._config = config
        try:
            yield
        finally:
            pkg._config = old

    def get_config() -> dict[str, Any] | None:
        return pkg._config

    pkg.override_config = override_config
    pkg.get_config = get_config


def _literal_assignments(body) -> dict[str, Any]:
    # The `NAME = <literal>` statements of a module or class body.
    found = {}
    for node in body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            try:
                found[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return found


def _partial_constants_module(name: str, path: Path,
                              classes=()) -> types.ModuleType:
    # Only the top-level `NAME = <literal>` assignments of the real file,
    # plus the named classes if their bodies are nothing but such
    # constants (e.g. config.py's CompilationLevel); no values invented.
    mod = types.ModuleType(name)
    mod.__file__ = str(path)
    mod.__vllm_loader_partial__ = True
    tree = ast.parse(path.read_text())
    for attr, value in _literal_assignments(tree.body).items():
        setattr(mod, attr, value)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in classes:
            body = [n for n in node.body if not (
                isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
            consts = _literal_assignments(body)
            if len(consts) != len(body) or node.bases:
                raise RuntimeError(f"{path}: {node.name} is not a plain "
                                   "class of constants")
            setattr(mod, node.name, type(node.name, (), dict(
                consts, __module__=name)))
    missing = [c for c in classes if not hasattr(mod, c)]
    if missing:
        raise RuntimeError(f"{path} has no class {missing}")
    return mod


def _register_partial_config(src: Path) -> None:
    # vLLM >= 0.8's quantization/utils/w8a8_utils.py (imported by
    # fp8_utils.py, which fused_moe.py imports) does
    # `from vllm.config import CompilationLevel, get_current_vllm_config`.
    # The real config.py imports transformers, pydantic, the model
    # registry and much of the engine. The partial module holds the tree's
    # CompilationLevel constants and a get_current_vllm_config that raises:
    # it is only called by Fp8LinearOp (fp8 linear layers), never on the
    # fused-MoE path. Trees whose w8a8_utils.py does not import vllm.config
    # (0.7.x) are left alone.
    w8a8 = src / "model_executor/layers/quantization/utils/w8a8_utils.py"
    if not w8a8.is_file() or "from vllm.config import" not in \
            w8a8.read_text():
        return
    name = "vllm.config"
    mod = _partial_constants_module(name, src / "config.py",
                                    classes=("CompilationLevel", ))

    def get_current_vllm_config():
        raise NotImplementedError(
            "vllm_loader: vllm.config is a partial module (CompilationLevel "
            "only); get_current_vllm_config is not available")

    mod.get_current_vllm_config = get_current_vllm_config
    sys.modules[name] = mod
    sys.modules["vllm"].config = mod


def _register_inputs_shell(src: Path) -> None:
    # vLLM >= 0.8 (platforms/interface.py) imports two type aliases from
    # ``vllm.inputs``, whose __init__ also imports registry.py and with it
    # ``transformers`` and vllm.transformers_utils. The shell is that
    # package with the real ``vllm/inputs/data.py`` (where both aliases
    # live) and its public names re-exported, as __init__ does; only the
    # registry half (InputRegistry, INPUT_REGISTRY, DummyData, ...) is
    # missing. Trees whose vllm/inputs/__init__.py does not import
    # transformers (directly or via registry.py) are left alone.
    pkg_dir = src / "inputs"
    registry = pkg_dir / "registry.py"
    if not registry.is_file() or "transformers" not in registry.read_text():
        return
    name = "vllm.inputs"
    pkg = types.ModuleType(name)
    pkg.__path__ = [str(pkg_dir)]
    pkg.__package__ = name
    pkg.__file__ = None
    pkg.__vllm_loader_shell__ = "registry.py not loaded (needs transformers)"
    sys.modules[name] = pkg
    sys.modules["vllm"].inputs = pkg
    data = importlib.import_module(name + ".data")
    for attr in dir(data):
        if not attr.startswith("_"):
            setattr(pkg, attr, getattr(data, attr))


def load_fused_moe(tree: os.PathLike | str,
                   standins: bool = True) -> types.ModuleType:
    """Import ``fused_moe.py`` of the vLLM tree rooted at ``tree``."""
    global _loaded_tree
    tree = Path(tree).resolve()
    src = tree / "vllm"
    if not (src / "model_executor/layers/fused_moe/fused_moe.py").is_file():
        raise FileNotFoundError(f"{tree} does not look like a vLLM tree")
    if _loaded_tree == tree:
        return sys.modules[FUSED_MOE_MODULE]
    if _loaded_tree is not None:
        unload()
    if "vllm" in sys.modules:
        raise RuntimeError("another vllm package is already imported")

    if standins:
        install_compiled_op_standins()
        if not list(src.glob("_C.*")):
            ext = types.ModuleType("vllm._C")
            ext.__vllm_loader_standin__ = True
            sys.modules["vllm._C"] = ext
    for name in SHELL_PACKAGES:
        pkg = types.ModuleType(name)
        rel = name.split(".")[1:]
        pkg.__path__ = [str(src.joinpath(*rel))]
        pkg.__package__ = name
        pkg.__file__ = None
        sys.modules[name] = pkg
        if "." in name:
            parent, child = name.rsplit(".", 1)
            setattr(sys.modules[parent], child, pkg)
    _add_fused_moe_config_helpers(
        sys.modules["vllm.model_executor.layers.fused_moe"])
    qqq = "vllm.model_executor.layers.quantization.qqq"
    sys.modules[qqq] = _partial_constants_module(
        qqq, src / "model_executor/layers/quantization/qqq.py")
    _register_inputs_shell(src)
    _register_partial_config(src)
    mod = importlib.import_module(FUSED_MOE_MODULE)
    assert Path(mod.__file__).resolve().is_relative_to(tree)
    if getattr(mod.triton, "__file__", None) is None:
        # vLLM >= 0.8 swaps in a TritonPlaceholder (dummy decorators) when
        # it finds no triton; the kernels would then never run.
        raise RuntimeError("fused_moe.py got vLLM's Triton placeholder, not "
                           "triton: is triton installed?")
    _loaded_tree = tree
    return mod


def unload() -> None:
    """Forget the loaded tree, so that another can be loaded: its ``vllm``
    modules leave sys.modules, and the operators they registered with
    torch.library (vllm/utils.py's ``vllm_lib``: inplace_fused_experts and
    the like, which the next tree registers again under the same names) are
    removed. The stand-ins for the compiled ops stay: they are the same for
    every tree."""
    global _loaded_tree
    for name in [n for n in sys.modules if n == "vllm" or n.startswith("vllm.")]:
        module = sys.modules.pop(name)
        for value in list(vars(module).values()):
            if isinstance(value, torch.library.Library):
                value._destroy()  # what the library's finaliser does
    _loaded_tree = None


def override_config(config: dict[str, Any] | None):
    """Context manager: force ``config`` in fused_experts_impl."""
    return sys.modules["vllm.model_executor.layers.fused_moe"].override_config(
        config)


# --------------------------------------------------------------------------
# Running one case in another process (for comparing two trees)
# --------------------------------------------------------------------------
def save_case(path: os.PathLike | str, *, hidden_states: torch.Tensor,
              w1: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor,
              config: dict[str, Any] | None) -> None:
    torch.save(
        dict(hidden_states=hidden_states, w1=w1, w2=w2,
             topk_weights=topk_weights, topk_ids=topk_ids, config=config),
        path)


def run_case(tree: os.PathLike | str, in_path: os.PathLike | str,
             out_path: os.PathLike | str) -> None:
    """Run a case (or a list of cases) saved by save_case / torch.save."""
    fm = load_fused_moe(tree)
    cases = torch.load(in_path)
    outs = []
    for case in cases if isinstance(cases, list) else [cases]:
        with override_config(case["config"]):
            outs.append(
                fm.fused_experts_impl(case["hidden_states"], case["w1"],
                                      case["w2"], case["topk_weights"],
                                      case["topk_ids"]))
    torch.save(outs if isinstance(cases, list) else outs[0], out_path)


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "--run-case":
        sys.exit("usage: vllm_loader.py --run-case TREE IN.pt OUT.pt")
    run_case(sys.argv[2], sys.argv[3], sys.argv[4])
