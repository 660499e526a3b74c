"""Knowledge base: upload, list, delete and re-index documents, with progress; try a search."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from customer_service.dashboard.common import bot_or_stop, escape_markdown, md_block, show_error
from verticore.dashboard import auth
from verticore.errors import VerticoreError

st.title("Knowledge base")
st.caption("Markdown, text, HTML, CSV/JSONL FAQ (question, answer) and PDF. Re-uploading a changed file replaces its "
           "passages; only changed passages are re-embedded.")
auth.guard_page()
bot = bot_or_stop()
kb = bot.kb

docs = kb.documents()
c1, c2, c3 = st.columns(3)
c1.metric("Documents", len(docs))
c2.metric("Passages", kb.chunk_count())
c3.metric("Embedder", kb.embedder.model if len(kb.embedder.model) < 24 else "…" + kb.embedder.model[-22:])

st.subheader("Upload")
can_edit = auth.require_role("agent", "Uploading, deleting and re-indexing documents")
files = st.file_uploader("Add or update documents", accept_multiple_files=True, disabled=not can_edit,
                         type=["md", "markdown", "txt", "html", "htm", "csv", "jsonl", "pdf"])
if (files and st.button("Ingest", type="primary", icon=":material/upload:", disabled=not can_edit)
        and auth.allowed("agent", "uploading documents")):
    bar = st.progress(0.0, text="Ingesting…")
    for i, f in enumerate(files):
        try:
            rep = kb.ingest_bytes(f.getvalue(), f.name)
            st.success(f"{rep.status}: {escape_markdown(rep.doc_id)} ({rep.chunks} passages, {rep.embedded} embedded, "
                       f"{rep.removed} removed)")
        except VerticoreError as exc:
            st.error(escape_markdown(f"{f.name}: {exc}"))
        bar.progress((i + 1) / len(files), text=f"{i + 1}/{len(files)} {f.name}")
    docs = kb.documents()

st.subheader("Documents")
if docs:
    st.dataframe(pd.DataFrame(docs)[["doc_id", "title", "kind", "n_chunks", "updated_at", "ingested_at"]],
                 hide_index=True, width="stretch")
    col_a, col_b = st.columns([3, 1])
    target = col_a.selectbox("Document", [d["doc_id"] for d in docs], label_visibility="collapsed")
    if col_b.button("Delete", icon=":material/delete:", disabled=not can_edit):
        try:
            auth.check_role("agent", "deleting documents")
            n = kb.delete(target)
            st.success(f"deleted {escape_markdown(target)} ({n} passages)")
            st.rerun()
        except VerticoreError as exc:
            show_error(exc)
else:
    st.info("The knowledge base is empty: upload help articles above.")

if (st.button("Re-index everything", icon=":material/sync:", disabled=not can_edit)
        and auth.allowed("agent", "re-indexing")):
    bar = st.progress(0.0, text="Re-embedding…")
    n = kb.reindex(show_progress=False, on_progress=lambda done, total: bar.progress(done / max(total, 1), text=f"{done}/{total} passages"))
    st.success(f"re-indexed {n} passages")

st.subheader("Try retrieval")
q = st.text_input("Query", value="How long does delivery take?")
mode = st.radio("Mode", ["hybrid", "bm25", "dense"], horizontal=True)
fusion = kb.fusion
st.caption(escape_markdown(  # kb.json is config, shown as text
    f"Hybrid fusion: {fusion['method']}, dense weight {fusion['dense_weight']}"
    + (f" (calibrated on {fusion['calibrated_on']} labelled questions, dev hit@1 {fusion.get('dev_hit1')}; "
       f"dense alone {fusion.get('dev_dense_only_hit1', '?')}, BM25 alone {fusion.get('dev_bm25_only_hit1', '?')})"
       if fusion.get("calibrated_on") else " (default; tune it with customer-service kb calibrate)")))
if q.strip():
    hits = kb.search(q, k=5, mode=mode)
    if not hits:
        st.caption("no results")
    for i, h in enumerate(hits, 1):
        score = f"cosine {h.dense_score:.2f}" if h.dense_score is not None else f"bm25 {h.bm25_score or 0:.2f}"
        where = escape_markdown(h.title) + (f" › {escape_markdown(h.section)}" if h.section and h.section != h.title else "")
        with st.expander(f"{i}\\. {where} \\({escape_markdown(h.source)}\\) · {score}"):
            st.markdown(md_block(h.text))  # KB files are untrusted markup
