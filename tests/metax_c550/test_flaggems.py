"""USE_FLAGGEMS: FlagGems enabled by the model runner at start-up."""

import ast
import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from c550_load import find_function, load_by_path, load_envs

FAKE_FLAG_GEMS = '''
__version__ = "0.0-test"
calls = []

def enable():
    calls.append("enable")
    with open(__file__ + ".enabled", "a") as f:
        f.write("x")
'''


@pytest.fixture
def fg(c550_tree):
    """A fresh vllm/platforms/metax_flaggems.py (module state reset)."""
    return load_by_path(c550_tree / "vllm/platforms/metax_flaggems.py")


@pytest.fixture
def fake_flag_gems(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "flag_gems"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE_FLAG_GEMS)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "flag_gems", raising=False)
    yield pkg / "__init__.py.enabled"
    sys.modules.pop("flag_gems", None)


def _use_flaggems(c550_tree, monkeypatch, value):
    if value is None:
        monkeypatch.delenv("USE_FLAGGEMS", raising=False)
    else:
        monkeypatch.setenv("USE_FLAGGEMS", value)
    envs = load_envs(c550_tree)
    assert "USE_FLAGGEMS" in envs.environment_variables
    return envs.USE_FLAGGEMS


@pytest.mark.parametrize("value", [None, "", "0", "no", "false", "off"])
def test_not_requested_imports_nothing(c550_tree, fg, fake_flag_gems,
                                       monkeypatch, value):
    requested = _use_flaggems(c550_tree, monkeypatch, value)
    assert requested is False
    assert fg.maybe_enable_flaggems(requested) is False
    assert "flag_gems" not in sys.modules
    assert not fake_flag_gems.exists()


@pytest.mark.parametrize("value", ["1", "true", "yes", "TRUE", "Yes",
                                   " 1 "])
def test_requested_enables(c550_tree, fg, fake_flag_gems, monkeypatch,
                           caplog, value):
    requested = _use_flaggems(c550_tree, monkeypatch, value)
    assert requested is True
    with caplog.at_level(logging.INFO, logger=fg.__name__):
        assert fg.maybe_enable_flaggems(requested) is True
        assert fg.maybe_enable_flaggems(requested) is True
    assert sys.modules["flag_gems"].calls == ["enable"]  # once per process
    assert fake_flag_gems.read_text() == "x"
    assert any("FlagGems enabled" in r.getMessage() for r in caplog.records)


def test_requested_but_missing_warns(c550_tree, fg, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "flag_gems", None)  # not importable
    requested = _use_flaggems(c550_tree, monkeypatch, "1")
    with caplog.at_level(logging.WARNING, logger=fg.__name__):
        assert fg.maybe_enable_flaggems(requested) is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "USE_FLAGGEMS" in warnings[0].getMessage()
    assert "flag_gems" in warnings[0].getMessage()


@pytest.mark.parametrize("path,cls", [
    ("vllm/worker/model_runner.py", "GPUModelRunnerBase"),
    ("vllm/v1/worker/gpu_model_runner.py", "GPUModelRunner"),
])
def test_model_runner_calls_it_first_in_load_model(c550_tree, path, cls):
    func = find_function(c550_tree / path, "load_model", cls)
    first = func.body[0]
    assert ast.unparse(first) == "maybe_enable_flaggems(envs.USE_FLAGGEMS)"
    src = (c550_tree / path).read_text()
    assert ("from vllm.platforms.metax_flaggems import "
            "maybe_enable_flaggems") in src
