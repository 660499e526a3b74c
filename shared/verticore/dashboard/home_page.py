"""Home page of the Verticore hub: what Verticore is, the three apps, and whether their demo is ready."""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

try:  # running from a source checkout without `pip install -e .`
    import verticore.dashboard  # noqa: F401
except ModuleNotFoundError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from verticore.dashboard import CORE_PAGE, core_demo_classifier, demo_ready, discover_pages, home


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
        "**One shared fine-tuning and inference core powering three vertical apps.** "
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
    cols = st.columns(len(entries))
    for col, entry in zip(cols, entries):
        with col, st.container(border=True, height="stretch"):
            st.subheader(entry.app.title, anchor=False)
            st.write(entry.app.summary)
            if not entry.installed:
                _status(False, "", "not installed")
                continue
            _status(demo_ready(entry.app.package, base), "demo state ready", "demo state not prepared")
            if entry.pages:
                for page in entry.pages:
                    _page_link(page["path"], page["title"], page["icon"])
            else:
                st.caption(entry.error or "no pages")
            for warning in entry.warnings:
                st.caption(f"⚠ {warning}")

    if not all(demo_ready(e.app.package, base) for e in entries):
        st.info("Prepare every demo with `make demo` (or `python -m verticore.demo --prepare-only`): it trains "
                "small models on bundled sample data into the demo state folder above. It is idempotent.",
                icon=":material/info:")


render()
