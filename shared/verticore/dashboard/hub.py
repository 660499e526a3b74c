"""Verticore hub: the multipage Streamlit app that ``make demo`` starts.

Run it with ``python -m verticore.demo`` (prepares demo state first) or directly::

    streamlit run shared/verticore/dashboard/hub.py

Pages: Home, Core: models, Usage (API usage per key), Models (the model registry: versions,
promotion history, promote / rollback), then the pages of every app registered under
the ``verticore.apps`` entry-point group (:func:`verticore.dashboard.hub_apps`), one navigation
section per app. An app that fails to load shows a warning instead of breaking the hub.

Login (``auth.gate``): asked when dashboard users are configured or the server is not bound to loopback;
on loopback with no users (``make demo``) there is none. See :mod:`verticore.dashboard.auth`.
"""
from __future__ import annotations

import streamlit as st

from verticore.dashboard import CORE_PAGE, CORE_URL_PATH, HOME_PAGE, hub_apps
from verticore.dashboard.auth import gate, has_role

st.set_page_config(page_title="Verticore", page_icon=":material/hub:", layout="wide")
gate()  # draws the login form (or the refusal) and stops unless someone may see the pages

home_page = st.Page(HOME_PAGE, title="Home", icon=":material/home:", default=True)
core_page = st.Page(CORE_PAGE, title="Core: models", icon=":material/memory:", url_path=CORE_URL_PATH)
usage_page = st.Page(CORE_PAGE.with_name("usage_page.py"), title="Usage", icon=":material/bar_chart:", url_path="usage")
models_page = st.Page(CORE_PAGE.with_name("models_page.py"), title="Models", icon=":material/model_training:",
                      url_path="models")
sections: dict[str, list] = {"Verticore": [home_page, core_page, usage_page, models_page]}
found = hub_apps()
problems: list[str] = list(found.problems)
seen_urls = {"", CORE_URL_PATH, "usage", "models"}

for entry in found.apps:
    problems.extend(entry.warnings)
    if entry.error and entry.broken:
        problems.append(entry.error)
    pages = []
    for page in entry.pages:
        url = page["url_path"]
        if url in seen_urls:
            problems.append(f"{entry.app.name}: page {page['title']!r} reuses url path {url!r}; skipped")
            continue
        try:
            if page.get("role") and not has_role(page["role"]):
                continue  # the page is for a higher role: not in this user's navigation
        except Exception as exc:  # an unknown role name: say so, hide the page
            problems.append(f"{entry.app.name}: page {page['title']!r}: {str(exc).splitlines()[0][:160]}")
            continue
        try:
            pages.append(st.Page(page["path"], title=page["title"], icon=page["icon"], url_path=url))
        except Exception as exc:  # e.g. an invalid icon string
            problems.append(f"{entry.app.name}: page {page['title']!r} is invalid ({str(exc).splitlines()[0][:160]})")
            continue
        seen_urls.add(url)
    if pages:
        sections[entry.app.title] = pages

st.session_state["verticore_hub_problems"] = problems
nav = st.navigation(sections, position="sidebar", expanded=True)
with st.sidebar:
    for problem in problems:
        st.warning(problem, icon=":material/warning:")
nav.run()
