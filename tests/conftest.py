import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def default_embedder():
    """One warmed-up default Embedder shared by the whole test session (loading costs ~1 s)."""
    from verticore import Embedder

    emb = Embedder("default", device="cpu")
    emb.warm_up()
    return emb


DATA_DIR = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def tiny_sentiment():
    """30 invented sentences (tests/data/tiny_sentiment.csv) with sentiment and topic labels."""
    import pandas as pd

    return pd.read_csv(DATA_DIR / "tiny_sentiment.csv")


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory, tiny_sentiment):
    """A classifier artifact from a tiny full fine-tune (a handful of steps), shared by all tests."""
    from verticore.finetune import ClassifierTrainingConfig, train_classifier

    df = tiny_sentiment
    out = tmp_path_factory.mktemp("artifacts") / "tiny_clf"
    cfg = ClassifierTrainingConfig(epochs=1, batch_size=8, max_steps=6, eval_every=3, learning_rate=1e-4,
                                   max_length=64, device="cpu")
    return train_classifier(df.text.tolist(), df.label.tolist(), df.text.tolist()[::3], df.label.tolist()[::3],
                            out, cfg, show_progress=False)


# Webhook/feed tests that talk to receivers on loopback: loopback is refused by default
# (verticore.netguard), so these modules opt in the way an operator would, via the environment.
_LOOPBACK_RECEIVER_MODULES = {"test_finance_sentiment_core", "test_finance_sentiment_app"}


@pytest.fixture(autouse=True)
def _allow_loopback_receivers(request, monkeypatch):
    if request.module.__name__.rsplit(".", 1)[-1] in _LOOPBACK_RECEIVER_MODULES:
        monkeypatch.setenv("VERTICORE_WEBHOOK_ALLOW", "127.0.0.1,::1")
    yield
