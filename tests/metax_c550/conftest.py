import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def c550_tree() -> Path:
    """Root of a patched vLLM tree (the folder with setup.py and env.sh)."""
    tree = os.environ.get("PATCHTOOL_C550_TREE")
    if not tree:
        pytest.fail("PATCHTOOL_C550_TREE is not set: point it at the root of "
                    "a vLLM tree with the MetaX C550 series applied")
    return Path(tree)
