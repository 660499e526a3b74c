"""Demo state for the hub: the bundled Lumen Home help articles, a small intent model, templates,
and a few replayed conversations so the analytics and handoff pages have something to show.

``prepare_demo(home)`` writes everything under ``home / "customer_service"`` and is idempotent:
when the marker ``demo.json`` matches the bundled samples, it returns immediately.
Env ``VERTICORE_DEMO_FAST=1`` trains the intent model for only a few steps (tests, CI).
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from tqdm.auto import tqdm

from verticore.io import atomic_write_json, read_json
from verticore.paths import app_home
from verticore.settings import get_settings

SAMPLES = Path(__file__).resolve().parent / "samples"
APP = "customer_service"
DEMO_VERSION = 1


def demo_dir(home: Path) -> Path:
    """``home / "customer_service"``."""
    return app_home(APP, Path(home))


def demo_kb_dir(home: Path) -> Path:
    """The demo bot's knowledge-base directory (pass it to ``customer-service ask --kb``)."""
    return demo_dir(home) / "kb"


def _fast() -> bool:
    return get_settings().demo_fast


def _samples_hash() -> str:
    h = hashlib.sha256()
    for p in sorted(SAMPLES.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(SAMPLES).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _up_to_date(root: Path, want: dict) -> bool:
    """The marker says this demo was built from the current samples (a full build also serves fast mode)."""
    marker = root / "demo.json"
    if not marker.exists() or not (root / "kb" / "kb.json").exists():
        return False
    try:
        have = read_json(marker, "demo marker")
    except Exception:
        return False
    if all(have.get(k) == v for k, v in want.items()):
        return True
    return have.get("version") == want["version"] and have.get("samples") == want["samples"] \
        and not have.get("fast") and want["fast"]


def is_ready(home: Path) -> bool:
    """True when :func:`prepare_demo` has completed for the current samples and settings."""
    fast = _fast()
    return _up_to_date(demo_dir(Path(home)), {"version": DEMO_VERSION, "samples": _samples_hash(), "fast": fast})


def prepare_demo(home: Path, show_progress: bool = True, fast: bool | None = None) -> None:
    """Build the demo bot under ``home / "customer_service"`` (idempotent, fast when done).

    ``fast`` (default: ``VERTICORE_DEMO_FAST``) trains the intent model for a few steps only.
    """
    root = demo_dir(Path(home))
    marker = root / "demo.json"
    fast = _fast() if fast is None else bool(fast)
    want = {"version": DEMO_VERSION, "samples": _samples_hash(), "fast": fast}
    if _up_to_date(root, want):
        return
    from verticore.finetune import ClassifierTrainingConfig
    from verticore.io import read_table

    from .bot import Bot
    from .intents import train_intent_model
    from .kb import KnowledgeBase

    steps = tqdm(total=4, desc="customer_service demo", unit="step", disable=not show_progress)
    kb_dir = demo_kb_dir(root.parent)
    if kb_dir.exists() and marker.exists():  # samples changed: rebuild from scratch
        shutil.rmtree(root)
    kb_dir.mkdir(parents=True, exist_ok=True)
    kb = KnowledgeBase(kb_dir)
    kb.ingest_dir(SAMPLES / "kb", show_progress=show_progress)
    steps.update(1)

    tr = read_table(SAMPLES / "intents_train.csv", ["text", "label"])
    dv = read_table(SAMPLES / "intents_dev.csv", ["text", "label"])
    oos = read_table(SAMPLES / "oos_dev.csv", ["text"])["text"].astype(str).tolist()
    cfg = ClassifierTrainingConfig(epochs=12, batch_size=16, learning_rate=1e-4, max_length=64, patience=3,
                                   max_steps=3 if fast else None, class_weights=None)
    intents_dir = root / "intents"
    if intents_dir.exists():
        shutil.rmtree(intents_dir)
    train_intent_model(tr["text"].astype(str).tolist(), tr["label"].astype(str).tolist(), dv["text"].astype(str).tolist(),
                       dv["label"].astype(str).tolist(), intents_dir, cfg, oos_dev_texts=oos, show_progress=show_progress)
    steps.update(1)

    shutil.copyfile(SAMPLES / "templates.yaml", kb_dir / "templates.yaml")
    atomic_write_json(kb_dir / "bot.json", {"intents": "../intents", "templates": "templates.yaml"})
    steps.update(1)

    # replay the demo questions (two conversations) so analytics and the handoff queue have data
    if not (kb_dir / "bot.sqlite").exists():
        bot = Bot.open(kb_dir, embedder=kb.embedder)
        # blank lines in demo_questions.txt separate conversations
        questions = [q.strip() for q in (SAMPLES / "demo_questions.txt").read_text(encoding="utf-8").splitlines()]
        sid = None
        for i, q in enumerate(questions):
            if not q:
                sid = None
                continue
            reply = bot.ask(q, session_id=sid)
            sid = reply.session_id
            if reply.status == "answered" and reply.turn_id is not None:
                bot.feedback(reply.turn_id, "down" if i % 5 == 4 else "up")
        bot.close()
    steps.update(1)
    steps.close()
    atomic_write_json(marker, want)
