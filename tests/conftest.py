import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "shared", ROOT / "apps"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def default_embedder():
    """One warmed-up default Embedder shared by the whole test session (loading costs ~1 s)."""
    from verticore import Embedder

    emb = Embedder("default", device="cpu")
    emb.warm_up()
    return emb
