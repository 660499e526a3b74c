"""Knowledge base: ingestion of every format, incremental re-ingest, delete, hybrid search, bad input."""
import json
import shutil
from pathlib import Path

import pytest

from customer_service.kb import KnowledgeBase
from customer_service.loaders import parse_bytes
from verticore.errors import DataError, IndexMismatchError

SAMPLES = Path(__file__).resolve().parents[1] / "apps" / "customer_service" / "samples" / "kb"


def make_pdf(text: str) -> bytes:
    """A minimal one-page PDF with ``text`` (written here so tests need no binary fixtures)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
            b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = b"%PDF-1.4\n", []
    for i, o in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1) + b"".join(b"%010d 00000 n \n" % x for x in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return out


@pytest.fixture(scope="module")
def kb(tmp_path_factory, default_embedder):
    kb = KnowledgeBase(tmp_path_factory.mktemp("kb"), embedder=default_embedder)
    kb.ingest_dir(SAMPLES, show_progress=False)
    return kb


def test_ingests_all_formats_with_metadata(kb):
    docs = {d["doc_id"]: d for d in kb.documents()}
    assert {"shipping.md", "warranty.html", "contact.txt", "faq.csv"} <= set(docs)
    assert docs["shipping.md"]["title"] == "Shipping and delivery" and docs["shipping.md"]["updated_at"] == "2025-03-02"
    assert docs["warranty.html"]["kind"] == "html" and docs["faq.csv"]["kind"] == "faq"
    hits = kb.search("How long is the warranty on a sofa frame?", k=3)
    assert hits[0].doc_id == "warranty.html" and hits[0].section == "Warranty period"
    assert "tracking" not in " ".join(h.text for h in kb.search("console log", k=5, mode="bm25"))  # <script> dropped
    faq = kb.search("do you sell gift cards", k=1)[0]
    assert faq.doc_id == "faq.csv" and faq.answer.startswith("Yes. Digital gift cards") and faq.meta["category"] == "PAYMENT"


def test_modes_filters_and_scores(kb):
    for mode in ("bm25", "dense", "hybrid"):
        top = kb.search("how much does express delivery cost", k=3, mode=mode)
        assert top and top[0].doc_id == "shipping.md", mode
    hyb = kb.search("how much does express delivery cost", k=3)
    assert hyb[0].dense_score is not None and hyb[0].dense_score > 0.4
    only = kb.search("delivery", k=5, filters={"source": "returns.md"})
    assert only and {h.doc_id for h in only} == {"returns.md"}
    assert kb.search("gift", k=5, filters={"category": "PRODUCTS"})[0].meta["category"] == "PRODUCTS"
    assert kb.search("delivery", k=5, filters={"source": "nope.md"}) == []
    with pytest.raises(DataError, match="mode"):
        kb.search("x", mode="magic")


def test_reingest_replaces_and_delete_removes(kb, tmp_path):
    doc = tmp_path / "policy.md"
    doc.write_text("# Pets\n\n## Pet beds\nOur pet beds are washable at 40 degrees.\n\n## Pet toys\nToys are not returnable.\n")
    r1 = kb.ingest(doc)
    assert (r1.status, r1.chunks, r1.embedded) == ("added", 2, 2)
    n = kb.chunk_count()
    assert kb.ingest(doc).status == "unchanged"
    doc.write_text("# Pets\n\n## Pet beds\nOur pet beds are washable at 60 degrees.\n\n## Pet toys\nToys are not returnable.\n")
    r3 = kb.ingest(doc)
    assert (r3.status, r3.chunks, r3.embedded, r3.removed) == ("updated", 2, 1, 1)  # only the changed chunk re-embedded
    assert kb.chunk_count() == n and len(kb.index) == n
    texts = [h.text for h in kb.search("pet bed washing temperature", k=5)]
    assert any("60 degrees" in t for t in texts) and not any("40 degrees" in t for t in texts)
    assert kb.delete("policy.md") == 2
    assert kb.chunk_count() == n - 2 and len(kb.index) == n - 2
    assert all(h.doc_id != "policy.md" for h in kb.search("pet beds", k=10))
    with pytest.raises(DataError, match="no document"):
        kb.delete("policy.md")


def test_pdf_and_bad_uploads(kb):
    rep = kb.ingest_bytes(make_pdf("Gift wrapping costs 3 euros per item."), "gift_wrapping.pdf")
    assert rep.status == "added"
    hit = kb.search("how much is gift wrapping", k=1)[0]
    assert hit.doc_id == "gift_wrapping.pdf" and hit.section == "page 1"
    kb.delete("gift_wrapping.pdf")
    with pytest.raises(DataError, match="not a readable PDF"):
        kb.ingest_bytes(b"%PDF-1.4 garbage \x00\x01 not really", "broken.pdf")
    with pytest.raises(DataError, match="not UTF-8"):
        kb.ingest_bytes("Größe und Rückgabe".encode("latin-1"), "latin1.txt")
    with pytest.raises(DataError, match="unsupported file type"):
        kb.ingest_bytes(b"MZ\x90", "tool.exe")
    with pytest.raises(DataError, match="question"):
        parse_bytes(b"foo,bar\nhi,there\n", "faq.csv")


def test_empty_kb_and_index_from_another_embedder(tmp_path, default_embedder):
    empty = KnowledgeBase(tmp_path / "empty", embedder=default_embedder)
    assert empty.search("anything") == [] and empty.chunk_count() == 0
    empty.ingest_bytes(b"Returns are free within 30 days.", "returns.txt")
    # another embedder: same architecture, different config -> different fingerprint
    other = tmp_path / "other_model"
    shutil.copytree(default_embedder.model_path, other, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "onnx", "openvino"))
    for w in ("model.safetensors",):
        (other / w).symlink_to(default_embedder.model_path / w)
    cfg = json.loads((other / "config.json").read_text())
    cfg["verticore_test_variant"] = 1
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(IndexMismatchError, match="reindex"):
        KnowledgeBase(tmp_path / "empty", embedder=str(other))
    # non-strict opening re-embeds the knowledge base with the new embedder
    kb2 = KnowledgeBase(tmp_path / "empty", embedder=str(other), strict=False)
    assert kb2.search("free returns", k=1)[0].doc_id == "returns.txt"


def test_fusion_calibration_is_persisted_and_leave_one_out(tmp_path, default_embedder):
    rows = [("How do I reset my password?", "Use the reset link on the sign-in page.", "account"),
            ("I forgot my password", "Click 'forgot password' and follow the e-mail.", "account"),
            ("Can I change my e-mail address?", "Yes, under Settings > Profile.", "account"),
            ("Where is my parcel?", "Track it with the link in your shipping e-mail.", "shipping"),
            ("How long does delivery take?", "Standard delivery takes 3-5 working days.", "shipping"),
            ("Do you ship abroad?", "We ship to 30 countries in Europe.", "shipping"),
            ("How do I return an item?", "Start a return from your order page within 30 days.", "returns"),
            ("When do I get my refund?", "Refunds reach your card 5 days after we receive the item.", "returns"),
            ("Can I return a sale item?", "Sale items can be returned like any other item.", "returns")]
    faq = tmp_path / "faq.csv"
    import pandas as pd

    pd.DataFrame(rows, columns=["question", "answer", "intent"]).to_csv(faq, index=False)
    kb = KnowledgeBase(tmp_path / "kb", embedder=default_embedder)
    kb.ingest(faq)
    own = {emb: cid for cid, emb in kb.conn.execute("SELECT chunk_id, embed_text FROM chunks")}
    questions = [q for q, _, _ in rows]
    intents = [i for _, _, i in rows]
    # leave-one-out: a query never retrieves the entry it was taken from
    hits = kb.search_many(questions, k=3, mode="hybrid", exclude=[own[q] for q in questions])
    assert all(own[q] not in {h.chunk_id for h in hs} for q, hs in zip(questions, hits))
    cal = kb.calibrate_fusion(questions, lambda i, c: c.meta["intent"] == intents[i], exclude=[own[q] for q in questions],
                              weights=[0.0, 0.3, 0.7, 1.0])
    table, chosen = cal["table"], cal["chosen"]
    assert len(table) == 8 and {r["method"] for r in table} == {"rrf", "convex"}
    assert chosen["dev_hit1"] == round(max(r["hit1"] for r in table), 4)
    # w=1 is dense alone: its dev hit@1 equals a plain dense search's
    dense = kb.search_many(questions, k=1, mode="dense", exclude=[own[q] for q in questions])
    dense_hit1 = sum(h[0].meta["intent"] == y for h, y in zip(dense, intents)) / len(rows)
    assert [r["hit1"] for r in table if r["method"] == "convex" and r["dense_weight"] == 1.0][0] == pytest.approx(dense_hit1)
    assert chosen["dev_dense_only_hit1"] == round(dense_hit1, 4)  # reported next to the fused figure
    bm25 = kb.search_many(questions, k=1, mode="bm25", exclude=[own[q] for q in questions])
    assert chosen["dev_bm25_only_hit1"] == round(sum(bool(h) and h[0].meta["intent"] == y for h, y in zip(bm25, intents)) / len(rows), 4)
    kb.close()
    stored = json.loads((tmp_path / "kb" / "kb.json").read_text())["fusion"]
    assert stored["method"] == chosen["method"] and stored["dense_weight"] == chosen["dense_weight"]
    reopened = KnowledgeBase(tmp_path / "kb", embedder=default_embedder)
    q = "my package has not arrived"
    assert [h.chunk_id for h in reopened.search(q, k=3)] == [
        h.chunk_id for h in reopened.search_many([q], k=3, fusion=chosen["method"], dense_weight=chosen["dense_weight"])[0]]
    with pytest.raises(DataError, match="dense_weight"):
        reopened.search_many([q], dense_weight=1.5)
    with pytest.raises(DataError, match="fusion"):
        reopened.search_many([q], fusion="magic")
    with pytest.raises(DataError, match="at least one dev query"):
        reopened.calibrate_fusion([], lambda i, c: True)
    stored_before = (tmp_path / "kb" / "kb.json").read_text()
    reopened.close()
    empty = KnowledgeBase(tmp_path / "empty_kb", embedder=default_embedder)
    with pytest.raises(DataError, match="empty"):
        empty.calibrate_fusion(["where is my parcel?"], lambda i, c: True)
    empty.close()
    assert (tmp_path / "kb" / "kb.json").read_text() == stored_before  # a failed calibration changes nothing
