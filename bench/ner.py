"""Fine-tune a token classifier (NER) on CoNLL-2003 (train / testa = dev / testb = test).

Writes ``bench/results/ner.json``::

    {"test_f1", "dev_f1", "per_type": {"PER", "ORG", "LOC", "MISC"}, "train_seconds", "tokens_per_s", "artifact", ...}

F1 is entity-level micro F1 from ``seqeval`` (conlleval conventions) on the test split, checked
against Verticore's own :func:`entity_f1`. ``tokens_per_s`` = CoNLL words tagged per second by the
loaded artifact (``TokenClassifier.predict_words``) on the test split.
"""
from __future__ import annotations

import argparse
import json
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
    ap.add_argument("--eval-only", type=Path, default=None, metavar="ARTIFACT",
                    help="score an artifact this bench trained before instead of training (its training config and "
                         "metrics.json supply the training figures)")
    ap.add_argument("--no-int8", action="store_true", help="skip the torch-int8 fidelity check (CPU only)")
    args = ap.parse_args()

    import numpy as np
    from seqeval.metrics import f1_score as seqeval_f1

    from verticore import TokenClassifier
    from verticore.evaluation import entity_f1
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
    if args.eval_only:
        art = args.eval_only
        metrics = json.loads((art / "metrics.json").read_text(encoding="utf-8"))
        tc = json.loads((art / "training_config.json").read_text(encoding="utf-8"))
        args.method, args.epochs, args.lr, args.batch_size, args.seed, args.base = (
            tc["method"], tc["epochs"], tc["learning_rate"], tc["batch_size"], tc["seed"], tc["base"])
        meta = json.loads((art / "verticore.json").read_text(encoding="utf-8"))
        n_train, n_dev = meta.get("n_train"), meta.get("n_dev")  # dev F1 is the artifact's, on its dev set
    else:
        out = args.out or ARTIFACTS / f"{args.name}-{args.method}"
        cfg = TokenClassifierTrainingConfig(base=args.base, method=args.method, epochs=args.epochs,
                                            batch_size=args.batch_size, learning_rate=args.lr,
                                            lora_learning_rate=max(args.lr, 1e-3) if args.method == "lora" else None,
                                            seed=args.seed, max_steps=args.max_steps, eval_every=args.eval_every)
        r = train_token_classifier(tr_x, tr_y, dv_x, dv_y, out, cfg)
        art, metrics, n_train, n_dev = r.artifact_dir, r.metrics, len(tr_x), len(dv_x)

    ner = TokenClassifier(art)
    te_pred, words_per_s = _tag_timed(ner, te_x)
    scores = entity_f1(te_y, te_pred)  # verticore.evaluation, cross-checked against seqeval just below
    test_f1 = float(scores["f1"])
    assert abs(test_f1 - float(seqeval_f1(te_y, te_pred))) < 1e-9
    # dev F1 comes from the artifact's metrics.json (the same entity_f1, computed while training)
    dev_f1 = float(metrics["dev"]["f1"])
    per_type = {t: {"precision": round(float(v["precision"]), 4), "recall": round(float(v["recall"]), 4),
                    "f1": round(float(v["f1"]), 4), "support": int(v["support"])}
                for t, v in scores["per_type"].items() if t in ("PER", "ORG", "LOC", "MISC")}
    result = {
        "test_f1": round(test_f1, 4), "dev_f1": round(dev_f1, 4), "per_type": per_type,
        "train_seconds": metrics["train_seconds"], "tokens_per_s": round(words_per_s, 1),
        "artifact": _rel(art),
        "method": args.method, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "seed": args.seed,
        "best_step": metrics["best_step"], "steps": metrics["steps"], "history": metrics["history"],
        "n_train": n_train, "n_dev": n_dev, "n_test": len(te_x), "device": ner.resolved_device,
        "base": args.base, "case_feature": ner.case_feature, "target_test_f1": 0.88, "reference": "BERT-base 92.4 test F1 (Devlin et al. 2019)",
        "metric": "entity-level micro F1, seqeval default mode (conlleval conventions)",
        "tokens_per_s_note": "CoNLL words tagged per second on the test split, batch 32, one process",
    }
    if not args.no_int8 and ner.resolved_device == "cpu":
        q_pred, q_words_per_s = _tag_timed(TokenClassifier(art, backend="torch-int8"), te_x)
        agree = sum(a == b for p, q in zip(te_pred, q_pred) for a, b in zip(p, q)) / sum(len(p) for p in te_pred)
        result["int8"] = {"backend": "torch-int8", "test_f1": round(float(entity_f1(te_y, q_pred)["f1"]), 4),
                          "tag_agreement_with_fp32": round(agree, 4), "tokens_per_s": round(q_words_per_s, 1)}
        print(f"torch-int8: test F1 {result['int8']['test_f1']:.4f}, {agree:.2%} of word tags as fp32, "
              f"{q_words_per_s:.0f} words/s")
    print_table(["type", "precision", "recall", "f1", "support"],
                [[t, v["precision"], v["recall"], v["f1"], v["support"]] for t, v in per_type.items()])
    print(f"test F1 {test_f1:.4f}  dev F1 {dev_f1:.4f}  train {metrics['train_seconds']:.0f}s  "
          f"{result['tokens_per_s']:.0f} words/s")
    write_result(args.name, result)


def _tag_timed(ner, rows: list[list[str]]) -> tuple[list[list[str]], float]:
    """Tags for ``rows`` and words tagged per second (model loading and warm-up not timed)."""
    ner.predict_words(rows[:8])
    t0 = time.perf_counter()
    pred = ner.predict_words(rows)
    return pred, sum(len(r) for r in rows) / (time.perf_counter() - t0)


def _rel(p: Path) -> str:
    root = Path(__file__).resolve().parents[1]
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)


if __name__ == "__main__":
    main()
