"""Home page of the Verticore hub: what Verticore is, the installed apps, and whether their demo is ready."""
from __future__ import annotations

import streamlit as st

from verticore.dashboard import CORE_PAGE, core_demo_classifier, discover_pages, home


def _page_link(path: str, label: str, icon: str | None) -> None:
    """A link to a hub page; plain text when the page is not registered (page run on its own)."""
    try:
        st.page_link(path, label=label, icon=icon)
    except Exception:
        st.markdown(f"- {label}")


def _status(ok: bool, yes: str, no: str) -> None:
    if ok:
        st.badge(yes, icon=":material/check_circle:", color="green")
    else:
        st.badge(no, icon=":material/pending:", color="orange")


def render() -> None:
    """Draw the page."""
    base = home()
    st.title("Verticore")
    st.markdown(
        "**One shared fine-tuning and inference core powering vertical apps.** "
        "The core embeds texts (all-MiniLM-L6-v2 by default, shipped offline), fine-tunes text "
        "classifiers (full or LoRA) with calibrated probabilities, serves FAISS vector indexes and "
        "evaluates models; it picks a GPU automatically when there is one and runs on CPU otherwise."
    )
    st.caption(f"Demo state (VERTICORE_HOME): `{base}`")

    with st.container(border=True):
        c1, c2 = st.columns([3, 1])
        with c1:
            st.subheader("Core: models", anchor=False)
            st.write("Classify or embed a text with any model, see the device in use.")
            _page_link(str(CORE_PAGE), "Open Core: models", ":material/memory:")
        with c2:
            clf = core_demo_classifier(base)
            _status((clf / "labels.json").is_file(), "demo classifier ready", "demo classifier not trained")

    st.header("Apps", anchor=False)
    entries = discover_pages()
    if not entries:
        st.info("No app is installed: apps register under the `verticore.apps` entry-point group.",
                icon=":material/info:")
        return
    ready = {e.app.name: e.installed and e.app.is_demo_ready(base) for e in entries}
    cols = st.columns(len(entries))
    for col, entry in zip(cols, entries):
        with col, st.container(border=True, height="stretch"):
            st.subheader(entry.app.title, anchor=False)
            if entry.app.summary:
                st.write(entry.app.summary)
            if not entry.installed:
                _status(False, "", "not installed")
                continue
            _status(ready[entry.app.name], "demo state ready", "demo state not prepared")
            if entry.pages:
                for page in entry.pages:
                    _page_link(page["path"], page["title"], page["icon"])
            else:
                st.caption(entry.error or "no pages")
            for warning in entry.warnings:
                st.caption(f"⚠ {warning}")

    if not all(ready.values()):
        st.info("Prepare every demo with `make demo` (or `python -m verticore.demo --prepare-only`): it trains "
                "small models on bundled sample data into the demo state folder above. It is idempotent.",
                icon=":material/info:")


render()
