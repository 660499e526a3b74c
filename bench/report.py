"""Fill the README's results table from ``bench/results/*.json`` (run after the benches).

Only figures present in the JSON files are written; a bench that has not run shows "not run".
"""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _load(name: str) -> dict | None:
    f = RESULTS / f"{name}.json"
    return json.loads(f.read_text()) if f.exists() else None


def _f(v, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (int, float)):
        return f"{v:.{digits}f}"
    return str(v)


def rows() -> list[str]:
    out = ["| bench | configuration | result | baseline / reference |", "|---|---|---|---|"]
    pb = _load("finetune_phrasebank")
    if pb:
        base = pb.get("baseline", {})
        for m in ("full", "lora"):
            if m in pb:
                r = pb[m]
                out.append(f"| finetune_phrasebank (50Agree test) | {m} fine-tune | acc {_f(r['test_accuracy'])}, macro-F1 "
                           f"{_f(r['test_macro_f1'])}, {r['train_seconds']:.0f} s | frozen emb + LR: acc "
                           f"{_f(base.get('test_accuracy'))}, macro-F1 {_f(base.get('test_macro_f1'))} |")
        if "allagree" in pb:
            out.append(f"| finetune_phrasebank (AllAgree test) | full (50Agree model) | acc {_f(pb['allagree']['test_accuracy'])} | FinBERT 0.97 |")
    tp = _load("throughput")
    if tp:
        e, c = tp.get("embedder", {}), tp.get("classifier", {})
        out.append(f"| throughput (CPU, 2 cores) | Embedder `{e.get('backend', '?')}` | {_f(e.get('sentences_per_s'), 0)} sent/s, "
                   f"x{_f(e.get('ratio'), 2)}, cosine_min {_f(e.get('cosine_min'), 4)} | SentenceTransformer.encode "
                   f"{_f(e.get('baseline_sentences_per_s'), 0)} sent/s |")
        out.append(f"| throughput (CPU, 2 cores) | TextClassifier `{c.get('backend', '?')}` | {_f(c.get('sentences_per_s'), 0)} sent/s, "
                   f"x{_f(c.get('ratio'), 2)}, argmax agreement {_f(c.get('argmax_agreement'), 4)} | HF pipeline "
                   f"{_f(c.get('baseline_sentences_per_s'), 0)} sent/s |")
    ix = _load("index")
    if ix:
        for name, r in ix.items():
            if isinstance(r, dict) and "qps" in r:
                out.append(f"| index (100k x 384) | {name} | {_f(r['qps'], 0)} QPS, recall@10 {_f(r['recall_at_10'])}, "
                           f"build {_f(r['build_seconds'], 1)} s | Flat = exact |")
    b77 = _load("banking77")
    if b77:
        full = b77.get("full", {})
        members = full.get("members") or {}
        if members:  # the ensemble: report it and each member
            parts = "2 fine-tunes + frozen-emb probe" + (" + TF-IDF probe" if "tfidf" in members else "")
            out.append(f"| banking77 (test) | ensemble: {parts} | acc {_f(full.get('test_accuracy'))}, "
                       f"macro-F1 {_f(full.get('test_macro_f1'))} | frozen emb + LR {_f(b77.get('baseline', {}).get('test_accuracy'))}; "
                       f"BERT-base 0.9366 |")
            if full.get("without_tfidf_probe"):
                out.append(f"| banking77 (test) | the same ensemble without the TF-IDF probe | "
                           f"acc {_f(full['without_tfidf_probe'].get('test_accuracy'))} | |")
            names = {"probe": "probe (frozen emb + LR)", "tfidf": "TF-IDF n-gram probe (word + char, LR)"}
            for name, m in members.items():
                what = names.get(name) or f"fine-tune, {m.get('head_init')} head, {m.get('epochs')} epochs"
                out.append(f"| banking77 (test) | ensemble member: {what} | acc {_f(m.get('test_accuracy'))} | |")
        else:
            out.append(f"| banking77 (test) | full fine-tune | acc {_f(full.get('test_accuracy'))} | "
                       f"frozen emb + LR {_f(b77.get('baseline', {}).get('test_accuracy'))}; BERT-base 0.9366 |")
        fs = b77.get("fewshot") or {}
        if fs:
            out.append(f"| banking77 few-shot (test) | single fine-tune on 5 / 10 per intent | acc {_f(fs.get('5'))} / {_f(fs.get('10'))} | "
                       f"all rows {_f(fs.get('all'))} |")
        oos = b77.get("oos") or {}
        if oos:
            out.append(f"| banking77 out-of-scope ({len(oos.get('held_out_intents', []))} held-out intents) | "
                       f"{oos.get('method', '?')} threshold on dev | false-accept {_f(oos.get('false_accept_rate'))}, "
                       f"false-reject {_f(oos.get('false_reject_rate'))} | |")
    rb = _load("retrieval_bitext")
    if rb:
        fusion = rb.get("fusion") or {}
        for name in ("bm25", "dense", "hybrid", "dense_finetuned", "hybrid_finetuned"):
            if name in rb:
                fz = fusion.get("finetuned" if name.endswith("finetuned") else "default") if name.startswith("hybrid") else None
                label = name + (f" ({fz['method']}, w={fz['dense_weight']})" if fz else "")
                out.append(f"| retrieval_bitext | {label} | hit@1 {_f(rb[name].get('hit1'))}, hit@5 {_f(rb[name].get('hit5'))}, "
                           f"MRR@10 {_f(rb[name].get('mrr10'))} | BM25 0.932 / dense 0.957 (reference) |")
        loo = (rb.get("kb_leave_one_out") or {}).get("default") or {}
        if loo.get("n_queries"):
            pv = loo.get("hybrid_vs_dense") or {}
            out.append(f"| retrieval_bitext, {loo['n_queries']} other kb questions (own entry left out) | bm25 / dense / hybrid | "
                       f"hit@1 {_f(loo.get('bm25_hit1'))} / {_f(loo.get('dense_hit1'))} / {_f(loo.get('hybrid_hit1'))} | "
                       f"hybrid vs dense: {pv.get('only_first_right')} vs {pv.get('only_second_right')} queries, "
                       f"McNemar p {_f(pv.get('mcnemar_p'), 3)} |")
    lat = _load("customer_service_latency")
    if lat:
        out.append(f"| customer_service latency | extractive answer | p50 {_f(lat.get('p50_ms'), 1)} ms, p95 "
                   f"{_f(lat.get('p95_ms'), 1)} ms | retrieval only p95 {_f(lat.get('retrieval_only_p95_ms'), 1)} ms |")
    fa = _load("finance_alerts")
    if fa:
        if "by_kind" in fa:
            for kind, r in fa["by_kind"].items():
                out.append(f"| finance_alerts ({fa.get('episodes')} episodes, {len(fa.get('seeds', []))} seeds) | "
                           f"{kind.replace('_', '-')} surges | precision {_f(r.get('precision'))}, recall "
                           f"{_f(r.get('recall'))}, median {_f(r.get('median_seconds_to_alert'), 0)} s to alert | |")
        else:
            out.append(f"| finance_alerts (replayed bursts) | surge detection | precision {_f(fa.get('precision'))}, "
                       f"recall {_f(fa.get('recall'))}, median {_f(fa.get('median_seconds_to_alert'), 0)} s to alert | |")
    sd = _load("sentiment_domains")
    if sd:
        for name in ("phrasebank_only", "multi_source", "baseline_frozen_lr"):
            r = sd.get(name)
            if not isinstance(r, dict):
                continue
            seeds = r.get("seeds") or []
            cells = []
            for src in ("phrasebank", "semeval2017_headlines", "fiqa2018_posts"):
                m = r.get(src) or {}
                spread = f" ± {_f(m.get('macro_f1_std'))}" if len(seeds) > 1 else ""
                cells.append(f"{_f(m.get('macro_f1'))}{spread}")
            pb_acc = (r.get("phrasebank") or {}).get("accuracy")
            label = name.replace("_", " ") + (f", {len(seeds)} seed{'s' if len(seeds) > 1 else ''}" if seeds else "")
            out.append(f"| sentiment_domains (test macro-F1: PhraseBank / SemEval headlines / FiQA posts) | {label} | "
                       f"{' / '.join(cells)}; PhraseBank acc {_f(pb_acc)} | |")
    ner = _load("ner")
    if ner:
        out.append(f"| ner (CoNLL-2003 test) | full fine-tune, case feature {ner.get('case_feature', 'none')} | "
                   f"entity F1 {_f(ner.get('test_f1'), 4)} (dev {_f(ner.get('dev_f1'), 4)}); torch-int8 "
                   f"{_f((ner.get('int8') or {}).get('test_f1'), 4)} | BERT-base 0.924 |")
    pii = _load("pii")
    if pii:
        c, b = pii.get("conll_test") or {}, pii.get("bitext_queries") or {}
        removed = ", ".join(f"{t} {_f((c.get(t) or {}).get('removed_share'))}" for t in ("PER", "LOC"))
        patterns = ", ".join(f"{t} {_f((c.get(t) or {}).get('patterns_only_share'))}" for t in ("PER", "LOC"))
        out.append(f"| pii (CoNLL test entities removed; Bitext questions changed) | `redact_pii` with the NER pass | "
                   f"removed {removed}; NER redacted {_f(b.get('ner_redacted_share'))} of Bitext questions | "
                   f"patterns only: removed {patterns} |")
    fp = _load("finance_pipeline")
    if fp:
        out.append(f"| finance_pipeline (CPU) | end to end | {_f(fp.get('items_per_s'), 1)} items/s | classify only "
                   f"{_f(fp.get('classify_only_items_per_s'), 1)} items/s (ratio {_f(fp.get('ratio'), 2)}) |")
    rec = _load("recommender")
    if rec:
        for name in ("random", "popularity", "ease", "text", "text_finetuned", "hybrid"):
            r = rec.get(name)
            if isinstance(r, dict):
                a, c = r.get("all") or {}, r.get("cold") or {}
                out.append(f"| recommender (MovieLens) | {name} | all NDCG@10 {_f(a.get('ndcg10'))}, Recall@10 "
                           f"{_f(a.get('recall10'))}; cold Recall@10 {_f(c.get('recall10'))} | |")
    return out


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    table = "\n".join(rows())
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), START + "\n" + table + "\n" + END, text, flags=re.S)
    readme.write_text(new, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
