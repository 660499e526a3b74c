"""Fine-tune the default model on Financial PhraseBank (fixed splits) and compare with a
frozen-embedding + logistic-regression baseline, for full fine-tuning and LoRA.

Writes ``bench/results/finetune_phrasebank.json``::

    {"full": {"test_accuracy", "test_macro_f1", "test_weighted_f1", "train_seconds", "artifact"},
     "lora": {...same}, "baseline": {...same without artifact}, "allagree": {...}}
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ARTIFACTS, DATA, RESULTS, print_table, write_result  # noqa: E402


def load(split_dir: Path, name: str, limit: int | None):
    from verticore.io import read_table

    df = read_table(split_dir / f"{name}.csv", ["text", "label"])
    return df.head(limit) if limit else df


def baseline(tr, dv, te) -> dict:
    """Frozen default embeddings + logistic regression (C picked on dev)."""
    from sklearn.linear_model import LogisticRegression

    from verticore import Embedder
    from verticore.evaluation import classification_metrics

    t0 = time.time()
    emb = Embedder("default")
    xtr, xdv, xte = (emb.encode(d.text.tolist(), show_progress=True) for d in (tr, dv, te))
    best = None
    for c in (0.3, 1.0, 3.0, 10.0, 30.0):
        clf = LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(xtr, tr.label)
        f1 = classification_metrics(dv.label.tolist(), clf.predict(xdv).tolist())["macro_f1"]
        if best is None or f1 > best[0]:
            best = (f1, clf)
    m = classification_metrics(te.label.tolist(), best[1].predict(xte).tolist())
    return {"test_accuracy": m["accuracy"], "test_macro_f1": m["macro_f1"], "test_weighted_f1": m["weighted_f1"],
            "train_seconds": round(time.time() - t0, 1)}


def finetune(tr, dv, te, method: str, out: Path, args) -> dict:
    from verticore.finetune import ClassifierTrainingConfig, train_classifier

    cfg = ClassifierTrainingConfig(method=method, epochs=args.epochs, batch_size=32, learning_rate=args.lr,
                                   lora_learning_rate=args.lora_lr, max_length=args.max_length, eval_every=args.eval_every,
                                   patience=args.patience, max_steps=args.max_steps, seed=42,
                                   head_init=args.head_init)
    r = train_classifier(tr.text.tolist(), tr.label.tolist(), dv.text.tolist(), dv.label.tolist(), out, cfg,
                         test_texts=te.text.tolist(), test_labels=te.label.tolist())
    t = r.metrics["test"]
    return {"test_accuracy": t["accuracy"], "test_macro_f1": t["macro_f1"], "test_weighted_f1": t["weighted_f1"],
            "train_seconds": r.metrics["train_seconds"], "artifact": str(r.artifact_dir),
            "dev_macro_f1": r.metrics["dev"]["macro_f1"], "best_step": r.metrics["best_step"],
            "temperature": r.metrics["temperature"], "dev_ece": r.metrics["dev"].get("ece"),
            "pooling": r.metrics.get("pooling"), "head_init": args.head_init}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA / "financial_phrasebank")
    ap.add_argument("--methods", default="baseline,full,lora")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--lora-lr", type=float, default=8e-4)
    ap.add_argument("--eval-every", type=int, default=60)
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--head-init", default="linear_probe", choices=["auto", "random", "linear_probe"],
                    help="linear_probe = LP-FT (head fitted on frozen features first)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N rows of each split (smoke runs)")
    ap.add_argument("--no-allagree", action="store_true", help="skip the AllAgree evaluation")
    args = ap.parse_args()
    split = args.data / "splits" / "50Agree"
    tr, dv, te = (load(split, n, args.limit) for n in ("train", "dev", "test"))
    print(f"Financial PhraseBank 50Agree: train {len(tr)}, dev {len(dv)}, test {len(te)}")
    # Re-running some methods keeps the others' figures from the previous run.
    previous = RESULTS / "finetune_phrasebank.json"
    results: dict = json.loads(previous.read_text()) if previous.exists() and not args.limit else {}
    methods = args.methods.split(",")
    if "baseline" in methods:
        results["baseline"] = baseline(tr, dv, te)
    for method in ("full", "lora"):
        if method in methods:
            results[method] = finetune(tr, dv, te, method, ARTIFACTS / f"phrasebank_{method}", args)
            results[method].update({"epochs": args.epochs, "learning_rate": args.lora_lr if method == "lora" else args.lr})
    if "full" in results and not args.no_allagree:
        # The 50Agree model scored on the AllAgree test split (sentences all annotators agreed on).
        from verticore import TextClassifier
        from verticore.evaluation import classification_metrics

        all_te = load(args.data / "splits" / "AllAgree", "test", args.limit)
        clf = TextClassifier(results["full"]["artifact"])
        pred = [clf.labels[i] for i in clf.predict_proba(all_te.text.tolist()).argmax(1)]
        m = classification_metrics(all_te.label.tolist(), pred)
        results["allagree"] = {"test_accuracy": m["accuracy"], "test_macro_f1": m["macro_f1"],
                               "test_weighted_f1": m["weighted_f1"], "model": "full (trained on 50Agree)", "n": len(all_te)}
    rows = [[name, f"{r['test_accuracy']:.4f}", f"{r['test_macro_f1']:.4f}", f"{r['test_weighted_f1']:.4f}",
             f"{r.get('train_seconds', float('nan')):.0f}"] for name, r in results.items()]
    print_table(["model", "test acc", "macro-F1", "weighted-F1", "train s"], rows)
    write_result("finetune_phrasebank", results)


if __name__ == "__main__":
    main()
