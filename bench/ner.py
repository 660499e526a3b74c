"""Fine-tune a token classifier (NER) on CoNLL-2003 (train / testa = dev / testb = test).

Writes ``bench/results/ner.json``::

    {"test_f1", "dev_f1", "per_type": {"PER", "ORG", "LOC", "MISC"}, "train_seconds", "tokens_per_s", "artifact", ...}

F1 is entity-level micro F1 from ``seqeval`` (conlleval conventions) on the test split, checked
against Verticore's own :func:`entity_f1`. ``tokens_per_s`` = CoNLL words tagged per second by the
loaded artifact (``TokenClassifier.predict_words``) on the test split.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ARTIFACTS, DATA, print_table, write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA / "conll2003")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-train", type=int, default=None, help="use a random N training sentences (quick runs)")
    ap.add_argument("--max-eval", type=int, default=None, help="use the first N dev/test sentences (quick runs)")
    ap.add_argument("--method", default="full", choices=["full", "lora"])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--eval-every", type=int, default=None, help="dev evaluation every N steps (default: per epoch)")
    ap.add_argument("--base", default="default")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--name", default="ner", help="results file name (bench/results/<name>.json)")
    args = ap.parse_args()

    import numpy as np
    from seqeval.metrics import classification_report, f1_score

    from verticore import TokenClassifier
    from verticore.inference.token_classifier import entity_f1
    from verticore.finetune import TokenClassifierTrainingConfig, read_conll, train_token_classifier

    tr_x, tr_y = read_conll(args.data / "eng.train")
    dv_x, dv_y = read_conll(args.data / "eng.testa")
    te_x, te_y = read_conll(args.data / "eng.testb")
    if args.max_train and args.max_train < len(tr_x):
        keep = np.random.default_rng(args.seed).choice(len(tr_x), args.max_train, replace=False)
        tr_x, tr_y = [tr_x[i] for i in keep], [tr_y[i] for i in keep]
    if args.max_eval:
        dv_x, dv_y, te_x, te_y = dv_x[: args.max_eval], dv_y[: args.max_eval], te_x[: args.max_eval], te_y[: args.max_eval]
    print(f"train {len(tr_x)} sentences, dev {len(dv_x)}, test {len(te_x)}")
    out = args.out or ARTIFACTS / f"{args.name}-{args.method}"
    cfg = TokenClassifierTrainingConfig(base=args.base, method=args.method, epochs=args.epochs, batch_size=args.batch_size,
                                        learning_rate=args.lr, lora_learning_rate=max(args.lr, 1e-3) if args.method == "lora" else None,
                                        seed=args.seed, max_steps=args.max_steps, eval_every=args.eval_every)
    r = train_token_classifier(tr_x, tr_y, dv_x, dv_y, out, cfg)

    ner = TokenClassifier(r.artifact_dir)
    ner.predict_words(te_x[:8])  # warm-up outside the timing
    t0 = time.perf_counter()
    te_pred = ner.predict_words(te_x)
    tagging_seconds = time.perf_counter() - t0
    n_words = sum(len(s) for s in te_x)
    test_f1 = float(f1_score(te_y, te_pred))
    # dev F1 comes from the artifact's metrics.json (Verticore's entity_f1, same conventions as
    # seqeval: checked here on test and in tests/test_token_classifier.py)
    dev_f1 = float(r.metrics["dev"]["f1"])
    own = entity_f1(te_y, te_pred)["f1"]
    assert abs(test_f1 - own) < 1e-9, (test_f1, own)
    rep = classification_report(te_y, te_pred, output_dict=True)
    per_type = {t: {"precision": round(float(rep[t]["precision"]), 4), "recall": round(float(rep[t]["recall"]), 4),
                    "f1": round(float(rep[t]["f1-score"]), 4), "support": int(rep[t]["support"])}
                for t in ("PER", "ORG", "LOC", "MISC") if t in rep}
    result = {
        "test_f1": round(test_f1, 4), "dev_f1": round(dev_f1, 4), "per_type": per_type,
        "train_seconds": r.metrics["train_seconds"], "tokens_per_s": round(n_words / tagging_seconds, 1),
        "artifact": _rel(r.artifact_dir),
        "method": args.method, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "seed": args.seed,
        "best_step": r.metrics["best_step"], "steps": r.metrics["steps"], "history": r.metrics["history"],
        "n_train": len(tr_x), "n_dev": len(dv_x), "n_test": len(te_x), "device": ner.resolved_device,
        "base": args.base, "target_test_f1": 0.88, "reference": "BERT-base 92.4 test F1 (Devlin et al. 2019)",
        "metric": "entity-level micro F1, seqeval default mode (conlleval conventions)",
    }
    print_table(["type", "precision", "recall", "f1", "support"],
                [[t, v["precision"], v["recall"], v["f1"], v["support"]] for t, v in per_type.items()])
    print(f"test F1 {test_f1:.4f}  dev F1 {dev_f1:.4f}  train {r.metrics['train_seconds']:.0f}s  "
          f"{result['tokens_per_s']:.0f} words/s")
    write_result(args.name, result)


def _rel(p: Path) -> str:
    root = Path(__file__).resolve().parents[1]
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)


if __name__ == "__main__":
    main()
