"""Models -- the model registry: versions per app and model, their metrics side by side, the promotion
history with its gate results, and (admins) promote / rollback.

Part of the hub (``hub.py``); also runs alone: ``streamlit run shared/verticore/dashboard/models_page.py``.
Reads ``$VERTICORE_HOME/registry`` (the same store as ``verticore models ...``). Every action goes through
:class:`verticore.registry.ModelRegistry`, so a failed gate refuses a promotion here exactly as on the CLI.
"""
from __future__ import annotations

from typing import Any, Callable

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from verticore.dashboard import auth
from verticore.errors import VerticoreError
from verticore.registry.store import ModelRegistry, ModelVersion

FLASH_ERROR = "models_flash_error"
FLASH_OK = "models_flash_ok"
#: preferred primary metrics, in order, when no gate result names one
PRIMARY_ORDER = ("accuracy", "macro_f1", "weighted_f1")


def _numeric_metrics(v: ModelVersion) -> dict[str, float]:
    """The version's top-level numeric metrics (nested tables such as per-class scores are left out)."""
    out: dict[str, float] = {}
    for k, val in v.metrics.items():
        if isinstance(val, (int, float)) and not isinstance(val, bool):
            out[k] = float(val)
    return out


def _gate(reg: ModelRegistry, v: ModelVersion) -> dict[str, Any] | None:
    """The stored gate result of ``v`` (``None`` when never gated or unreadable)."""
    try:
        return reg.read_gate(v)
    except VerticoreError:
        return None


def primary_metric(versions: list[ModelVersion], gates: list[dict[str, Any] | None]) -> str | None:
    """The metric the gate compares on (from any gate result), else the first of :data:`PRIMARY_ORDER`
    that the versions report, else any numeric metric."""
    for g in gates:
        if g and isinstance(g.get("result"), dict) and g["result"].get("primary"):
            return str(g["result"]["primary"])
    names = {k for v in versions for k in _numeric_metrics(v)}
    for k in PRIMARY_ORDER:
        if k in names:
            return k
    return sorted(names)[0] if names else None


def versions_frame(versions: list[ModelVersion], aliases: dict[str, int]) -> pd.DataFrame:
    """One row per version: identity, lineage, data fingerprint, aliases and every numeric metric."""
    by_version: dict[int, list[str]] = {}
    for alias, n in sorted(aliases.items()):
        by_version.setdefault(n, []).append(alias)
    rows = []
    for v in versions:
        rows.append({"version": v.version, "created (UTC)": v.created_at, "by": v.created_by,
                     "parent": f"v{v.parent}" if v.parent is not None else "–",
                     "data fingerprint": v.data_fingerprint[:16], "eval split": v.eval_split[:24],
                     "aliases": ", ".join(by_version.get(v.version, [])), **_numeric_metrics(v)})
    return pd.DataFrame(rows)


def _gate_summary(g: dict[str, Any] | None) -> dict[str, Any]:
    if not g or not isinstance(g.get("result"), dict):
        return {"gate": "–", "delta": None, "p-value": None, "CI": "–", "gate reason": ""}
    r = g["result"]
    ci = f"[{r.get('ci_low', 0):+.4f}, {r.get('ci_high', 0):+.4f}]" if "ci_low" in r else "–"
    return {"gate": ("passed" if r.get("passed") else "failed") + f" vs v{g.get('against', {}).get('version', '?')}",
            "delta": r.get("delta"), "p-value": (r.get("mcnemar") or {}).get("p_value"), "CI": ci,
            "gate reason": r.get("reason", "")}


def history_frame(reg: ModelRegistry, app: str, model: str, by_number: dict[int, ModelVersion]) -> pd.DataFrame:
    """The promotion log, newest first, each switch with the gate result stored on its target version."""
    rows = []
    for h in reversed(reg.history(app, model)):
        to = h.get("to")
        target = by_number.get(to) if isinstance(to, int) else None
        frm = h.get("from")
        rows.append({"when (UTC)": h.get("ts", ""), "action": h.get("action", ""), "alias": h.get("alias", ""),
                     "from → to": f"{'v' + str(frm) if frm is not None else '–'} → v{to}", "by": h.get("by", ""),
                     "reason": h.get("reason", ""), **_gate_summary(_gate(reg, target) if target else None)})
    return pd.DataFrame(rows)


def metric_figure(versions: list[ModelVersion], metric: str, aliases: dict[str, int]) -> go.Figure:
    """Bars of ``metric`` per version (the production version highlighted) with a line through them."""
    xs = [f"v{v.version}" for v in versions]
    ys = [_numeric_metrics(v).get(metric) for v in versions]
    prod = aliases.get("production")
    colors = ["#2e7d32" if v.version == prod else "#90a4ae" for v in versions]
    fig = go.Figure()
    fig.add_bar(x=xs, y=ys, marker_color=colors, name=metric, text=[f"{y:.4f}" if y is not None else "" for y in ys])
    fig.add_scatter(x=xs, y=ys, mode="lines+markers", name="trend", line={"color": "#455a64"})
    fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": 30, "b": 10}, showlegend=False,
                      yaxis_title=metric, xaxis_title="version", title=f"{metric} on the fixed evaluation split")
    return fig


def _action(what: str, action: Callable[[ModelRegistry, str], ModelVersion], verb: str) -> None:
    """Run a registry action from a button callback: the role is checked again here, and the
    registry's own one-line error (failed gate, corrupt version, read-only disk) is shown."""
    try:
        auth.check_role("admin", what)  # again here: hiding the button alone is not enough
        user = auth.current_user()
        v = action(ModelRegistry(), user.username if user else "unknown")
        st.session_state[FLASH_OK] = f"{verb} {v.name}."
    except VerticoreError as exc:
        st.session_state[FLASH_ERROR] = str(exc).splitlines()[0]


def _promote(app: str, model: str) -> None:
    state = st.session_state
    alias = state.get("models_alias") or "production"
    pick = state.get("models_promote_pick")
    reason = (state.get("models_reason") or "").strip() or "dashboard"
    _action(f"promoting {app}/{model}",
            lambda reg, by: reg.promote(app, model, int(pick), alias, by=by, reason=reason),
            f"{alias} now points at")


def _rollback(app: str, model: str) -> None:
    state = st.session_state
    alias = state.get("models_alias") or "production"
    reason = (state.get("models_reason") or "").strip() or "dashboard"
    _action(f"rolling back {app}/{model}", lambda reg, by: reg.rollback(app, model, alias, by=by, reason=reason),
            f"{alias} rolled back to")


def actions_section(app: str, model: str, versions: list[ModelVersion], aliases: dict[str, int]) -> None:
    """Promote a version to an alias / roll an alias back -- admins only."""
    st.subheader("Promote / roll back", anchor=False)
    if not auth.require_role("admin", "Promoting and rolling back models"):
        return
    c1, c2, c3 = st.columns([1, 1, 2])
    numbers = [v.version for v in versions]
    default = numbers.index(max(numbers))
    c1.selectbox("Version", numbers, index=default, format_func=lambda n: f"v{n}", key="models_promote_pick")
    c2.selectbox("Alias", ["production", "candidate"], key="models_alias")
    c3.text_input("Reason (logged)", key="models_reason", placeholder="e.g. retrained on March feedback")
    b1, b2 = st.columns(2)
    b1.button("Promote", key="models_promote", type="primary", icon=":material/upgrade:",
              on_click=_promote, args=(app, model))
    b2.button("Roll back", key="models_rollback", icon=":material/undo:", on_click=_rollback, args=(app, model),
              disabled=not aliases)
    st.caption("A promotion to production is refused when the version's stored gate against the current production "
               "version failed (run `verticore retrain` or the gate first); rollback returns the alias to its "
               "previous version.")


def models_page() -> None:
    """The whole page."""
    reg = ModelRegistry()
    st.caption(f"Registered model versions from `{reg.root}` (CLI: `verticore models list|show|promote|rollback|"
               "diff|prune`; the retrain loop: `verticore retrain`). Running services follow the production alias.")
    if msg := st.session_state.pop(FLASH_ERROR, None):
        st.error(msg)
    if msg := st.session_state.pop(FLASH_OK, None):
        st.success(msg)
    pairs = reg.models()
    if not pairs:
        st.info("No model versions registered yet. Run `verticore retrain --app APP --model MODEL` or register one.")
        return
    label = st.selectbox("Model", [f"{a}/{m}" for a, m in pairs], key="models_pick")
    app, model = label.split("/", 1)
    try:
        versions = reg.versions(app, model)
        aliases = reg.aliases(app, model)
    except VerticoreError as exc:
        st.error(str(exc).splitlines()[0])
        return
    for bad in reg.incomplete(app, model):
        st.warning(f"Version folder {bad.name} is incomplete and ignored: {bad.reason}", icon=":material/warning:")
    if not versions:
        st.info(f"{app}/{model} has no complete version.")
        return
    known = ", ".join(f"{a} → v{n}" for a, n in sorted(aliases.items())) or "no aliases yet"
    st.markdown(f"**{app}/{model}**: {len(versions)} version(s); {known}")

    st.subheader("Versions", anchor=False)
    st.dataframe(versions_frame(versions, aliases), hide_index=True, width="stretch")
    gates = [_gate(reg, v) for v in versions]
    metric = primary_metric(versions, gates)
    if metric:
        names = sorted({k for v in versions for k in _numeric_metrics(v)})
        chosen = st.selectbox("Metric", names, index=names.index(metric), key="models_metric")
        st.plotly_chart(metric_figure(versions, chosen, aliases), width="stretch")

    st.subheader("Promotion history", anchor=False)
    hist = history_frame(reg, app, model, {v.version: v for v in versions})
    if hist.empty:
        st.caption("No promotions yet.")
    else:
        st.dataframe(hist, hide_index=True, width="stretch")
    actions_section(app, model, versions, aliases)


st.title("Models")
auth.guard_page()
models_page()
