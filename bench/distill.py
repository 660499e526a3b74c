"""BANKING77 distillation bench: one default-size student learns the 4-member ensemble's soft labels.

Teacher: the ensemble of bench/banking77.py (its recipe, reused from there: random-head and LP-FT
fine-tunes of the default model, a frozen-embedding probe, a TF-IDF n-gram probe), trained on the
training split, or an existing ensemble/classifier artifact given with --teacher DIR. Student: by
default it starts from the teacher's best fine-tuned member (by dev accuracy; the same size as the
default model, head included: a warm start, 4 epochs at lr 5e-5), with --student-init scratch from
the default model with a fresh head (10 epochs at --lr); distilled with
verticore.finetune.distill.distill_classifier on the training rows (alpha * CE on the gold label + (1 - alpha) * T^2 * KL to the teacher), plus, as
unlabeled rows (pure KL): with --unlabeled-train the training texts once more, with --augment N
N perturbed copies of each training text (word dropout / neighbour swap). The single fine-tune is the
ensemble's random-head member (the same recipe as bench/banking77.py's single model).

ms_per_text: predict_proba over the whole test set (after a warm-up), same device and max length for all.

Writes bench/results/distill.json:
  {"teacher": {"test_accuracy", "ms_per_text"}, "student": {"test_accuracy", "ms_per_text"},
   "single_finetune": {"test_accuracy"}, ...details}

Usage: python bench/distill.py [--quick] [--teacher DIR] [--work DIR] [--student-init best-member|scratch|DIR]
       [--student-epochs N] [--student-lr LR] [--temperature T] [--alpha A]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "shared", ROOT / "apps", ROOT):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from bench import banking77  # noqa: E402
from bench.common import DATA, write_result  # noqa: E402


def timed_accuracy(clf, texts, labels) -> dict:
    """Test accuracy and milliseconds per text of ``clf.predict_proba`` over all ``texts`` (warmed up)."""
    clf.predict_proba(texts[:16])
    t0 = time.perf_counter()
    probs = clf.predict_proba(texts)
    ms = (time.perf_counter() - t0) * 1000 / len(texts)
    pred = [clf.labels[i] for i in np.asarray(probs).argmax(1)]
    return {"test_accuracy": round(float(np.mean([p == y for p, y in zip(pred, labels)])), 4),
            "ms_per_text": round(ms, 3)}


def perturbed_variants(texts: list[str], n: int, drop: float = 0.15, seed: int = 0) -> list[str]:
    """``n`` noisy copies of each text (word dropout, sometimes two neighbouring words swapped): extra
    in-domain unlabeled text on which the teacher's soft labels carry more than the gold label."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    for text in texts:
        words = text.split()
        for _ in range(n):
            kept = [w for w in words if rng.random() >= drop] or list(words)
            if len(kept) > 2 and rng.random() < 0.5:
                i = int(rng.integers(len(kept) - 1))
                kept[i], kept[i + 1] = kept[i + 1], kept[i]
            out.append(" ".join(kept))
    return out


def best_member(teacher_dir: Path) -> Path | None:
    """The teacher ensemble's fine-tuned member (a transformer classifier, not a probe) with the best
    dev accuracy in its metrics.json; None for a teacher that is not an ensemble of such members."""
    import json

    best: tuple[float, Path] | None = None
    for member in sorted(Path(teacher_dir).glob("member*")):
        try:
            acc = float(json.loads((member / "metrics.json").read_text(encoding="utf-8"))["dev"]["accuracy"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if (member / "model.safetensors").is_file() and (best is None or acc > best[0]):
            best = (acc, member)
    return best[1] if best else None


def student_start(init_dir: Path, train_labels) -> tuple[str, str]:
    """(base, pooling) of a student that starts from the fine-tuned classifier ``init_dir``, head
    included: the trainer keeps a base's head only when its labels are the training labels in the
    trainer's (sorted) order, and re-initialises it otherwise, so anything else is refused here."""
    import json

    meta = json.loads((init_dir / "verticore.json").read_text(encoding="utf-8"))
    labels = json.loads((init_dir / "labels.json").read_text(encoding="utf-8"))["labels"]
    if labels != sorted(set(train_labels)):
        raise SystemExit(f"{init_dir}: its labels are not the training labels (sorted); cannot start the student from it")
    return str(init_dir), meta.get("pooling", "auto")


def save(name: str, result: dict, elsewhere: Path | None) -> Path:
    """bench/results/<name>.json, or ``elsewhere/<name>.json`` (quick runs stay out of the results)."""
    if elsewhere is None:
        return write_result(name, result)
    from verticore.io import atomic_write_json

    return atomic_write_json(elsewhere / f"{name}.json", result)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="tiny smoke run (6 rows per intent, a few steps; writes WORK/distill_quick.json): numbers are meaningless")
    ap.add_argument("--teacher", default=None, help="reuse this ensemble/classifier artifact as the teacher")
    ap.add_argument("--work", default=None, help="directory for the teacher and student artifacts (default: a temp dir)")
    ap.add_argument("--epochs", type=int, default=6, help="epochs of the teacher's random-head member")
    ap.add_argument("--lpft-epochs", type=int, default=8, help="epochs of the teacher's LP-FT member")
    ap.add_argument("--lr", type=float, default=1.5e-4, help="learning rate (teacher members and student)")
    ap.add_argument("--student-epochs", type=int, default=None,
                    help="epochs of the student, early-stopped on dev (default: 4 from a teacher member, 10 from scratch)")
    ap.add_argument("--student-lr", type=float, default=None,
                    help="student learning rate (default: 5e-5 from a teacher member, --lr from scratch)")
    ap.add_argument("--student-head-init", default="random", choices=["auto", "random", "linear_probe"])
    ap.add_argument("--student-init", default="best-member",
                    help="where the student starts: best-member (the teacher's fine-tuned member with the best dev "
                         "accuracy, head included), scratch (the default model with a fresh head), or a classifier "
                         "directory of the default size with the same labels")
    ap.add_argument("--temperature", type=float, default=2.0, help="distillation temperature T")
    ap.add_argument("--alpha", type=float, default=0.3, help="weight of the gold-label cross-entropy")
    ap.add_argument("--unlabeled-train", action="store_true", help="add the training texts again as unlabeled rows")
    ap.add_argument("--augment", type=int, default=0,
                    help="add N perturbed copies of each training text (word dropout/swap) as unlabeled rows")
    ap.add_argument("--seed", type=int, default=42, help="seed of the teacher's fine-tunes and the student")
    ap.add_argument("--device", default="auto", help="device for training and timing")
    ap.add_argument("--name", default=None, help="result name (default: distill, or distill_quick with --quick)")
    args = ap.parse_args(argv)
    name = args.name or ("distill_quick" if args.quick else "distill")
    if os.environ.get("VERTICORE_DATA"):  # the settings' data root; banking77.py reads ../shared/data by default
        banking77.DATA = Path(DATA) / "banking77" / "splits"
    max_steps = 6 if args.quick else None
    train, dev, test = banking77.load("train"), banking77.load("dev"), banking77.load("test")
    if args.quick:
        train, dev, test = (banking77.per_class_sample(*train, 6), banking77.per_class_sample(*dev, 2),
                            banking77.per_class_sample(*test, 2))
    work = Path(args.work or tempfile.mkdtemp(prefix="distill_"))
    result: dict = {"dataset": "BANKING77 (PolyAI), official test split", "model": "default (all-MiniLM-L6-v2)",
                    "n_train": len(train[0]), "n_dev": len(dev[0]), "n_test": len(test[0]), "quick": args.quick}
    from verticore.finetune.distill import distill_classifier
    from verticore.inference import load_classifier

    t0 = time.time()
    if args.teacher:
        teacher_dir = Path(args.teacher)
    else:
        from verticore.finetune import train_classifier_ensemble

        configs = banking77.ensemble_configs(args, max_steps)
        teacher_dir = train_classifier_ensemble(train[0], train[1], dev[0], dev[1], work / "teacher", configs=configs,
                                                show_progress=True).artifact_dir
    teacher = load_classifier(teacher_dir, device=args.device, max_length=64)
    result["teacher"] = {**timed_accuracy(teacher, test[0], test[1]), "path": str(teacher_dir),
                         "model": repr(teacher), "seconds": round(time.time() - t0, 1)}
    single = getattr(teacher, "members", [None])[0]
    if single is not None:  # the ensemble's random-head fine-tune = the single model of the same recipe
        result["single_finetune"] = {**timed_accuracy(single, test[0], test[1]), "model": "ensemble member0"}
    save(name, result, work if args.quick else None)

    init = best_member(teacher_dir) if args.student_init == "best-member" else \
        None if args.student_init == "scratch" else Path(args.student_init)
    epochs = args.student_epochs or (4 if init else 10)
    lr = args.student_lr or (5e-5 if init else args.lr)
    cfg = banking77.base_config(epochs, lr, max_steps, seed=args.seed, head_init=args.student_head_init)
    cfg.device = args.device
    if init is not None:
        cfg.base, cfg.pooling = student_start(init, train[1])
    unlabeled = (list(train[0]) if args.unlabeled_train else []) + perturbed_variants(train[0], args.augment, seed=args.seed)
    t0 = time.time()
    res = distill_classifier(teacher, train[0], train[1], dev[0], dev[1], work / "student", cfg,
                             unlabeled_texts=unlabeled or None,
                             temperature=args.temperature, alpha=args.alpha, teacher_name=str(teacher_dir))
    student = load_classifier(res.artifact_dir, device=args.device, max_length=64)
    result["student"] = {**timed_accuracy(student, test[0], test[1]), "path": str(res.artifact_dir),
                         "temperature": args.temperature, "alpha": args.alpha, "epochs": epochs,
                         "learning_rate": lr, "init": str(init) if init else "scratch",
                         "head_init": "warm_start" if init else args.student_head_init,
                         "unlabeled": {"train_texts": args.unlabeled_train, "augment_copies": args.augment,
                                       "n": len(unlabeled)},
                         "best_step": res.metrics.get("best_step"), "distillation": res.metrics["distillation"],
                         "seconds": round(time.time() - t0, 1)}
    path = save(name, result, work if args.quick else None)
    for part in ("teacher", "single_finetune", "student"):
        if part in result:
            r = result[part]
            print(f"{part:<16} accuracy {r['test_accuracy']:.4f}  {r.get('ms_per_text', float('nan')):.3f} ms/text")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
