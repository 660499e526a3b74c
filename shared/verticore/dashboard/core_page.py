"""Core: models -- classify and embed a text with any Verticore model, and see the device in use.

Part of the hub (``hub.py``); also runs alone: ``streamlit run shared/verticore/dashboard/core_page.py``.
Models are cached with ``st.cache_resource``; user mistakes (bad model path, empty text) show an
``st.error`` box, never a stack trace.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import streamlit as st

from verticore.dashboard import core_demo_classifier, find_artifacts, home
from verticore.errors import VerticoreError

DEFAULT_EMBEDDER_LABEL = "Default: all-MiniLM-L6-v2 (embedded)"
CUSTOM_LABEL = "Custom path…"
EXAMPLE_CLASSIFY = "The support team solved my problem in minutes, thank you!"
EXAMPLE_EMBED_A = "How do I reset my password?"
EXAMPLE_EMBED_B = "I forgot my login credentials and cannot sign in."


# -- cached heavy state ----------------------------------------------------------------------
def _stamp(path: str) -> float:
    """Changes when an artifact is re-trained in place, so the cache reloads it."""
    p = Path(path)
    return max((p / f).stat().st_mtime for f in ("config.json", "model.safetensors", "labels.json", "calibration.json")
               if (p / f).exists()) if p.is_dir() else 0.0


@st.cache_resource(show_spinner="Loading classifier…", max_entries=4)
def load_classifier(path: str, stamp: float):
    """A warmed-up classifier artifact or ensemble (cached per path and mtime)."""
    from verticore.inference import load_classifier as open_classifier

    clf = open_classifier(path, device="auto")
    clf.warm_up()
    return clf


@st.cache_resource(show_spinner="Loading embedder…", max_entries=4)
def load_embedder(spec: str, stamp: float):
    """A warmed-up :class:`~verticore.inference.Embedder` (cached per spec and mtime)."""
    from verticore.inference import Embedder

    emb = Embedder(spec, device="auto")
    emb.warm_up()
    return emb


@st.cache_data(show_spinner=False)
def device_info() -> dict[str, Any]:
    """Device that ``auto`` resolves to, torch version, CUDA and FAISS-GPU availability."""
    import torch

    from verticore import resolve_device

    info: dict[str, Any] = {"device": resolve_device("auto"), "torch": torch.__version__,
                            "cuda": torch.cuda.is_available(), "gpu_name": None, "faiss": None, "faiss_gpus": 0}
    if info["cuda"]:
        try:
            info["gpu_name"] = torch.cuda.get_device_name(0)
        except Exception:  # pragma: no cover - only with a GPU
            info["gpu_name"] = "CUDA GPU"
    try:
        import faiss

        info["faiss"] = getattr(faiss, "__version__", "installed")
        get_num_gpus = getattr(faiss, "get_num_gpus", None)
        info["faiss_gpus"] = int(get_num_gpus()) if callable(get_num_gpus) else 0
    except ImportError:
        pass
    return info


def run_guarded(what: str, fn: Callable[[], Any]) -> Any | None:
    """Run ``fn``; a user mistake or a failing model becomes one ``st.error`` line."""
    try:
        return fn()
    except VerticoreError as exc:
        st.error(f"{what}: {exc}", icon=":material/error:")
    except Exception as exc:  # never show a stack trace in the dashboard
        first = (str(exc).strip().splitlines() or [""])[0][:240]
        st.error(f"{what} failed: {type(exc).__name__}: {first}", icon=":material/error:")
    return None


def _check_model_dir(path: str, kind: str) -> str | None:
    """One-line problem with a typed model path, or None when it looks loadable."""
    from verticore.artifact import check_artifact_dir, read_labels

    if not path.strip():
        return f"type the path of a {kind} directory"
    p = Path(path.strip()).expanduser()
    try:
        if kind == "classifier":
            check_artifact_dir(p)
            if read_labels(p) is None:
                return f"{p} has no labels.json or id2label: not a classifier"
        else:
            from verticore import resolve_model

            resolve_model(str(p))
    except VerticoreError as exc:
        return str(exc)
    return None


# -- page ------------------------------------------------------------------------------------
def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def _model_picker(kind: str, options: dict[str, str], key: str) -> str | None:
    """Selectbox of known models plus a custom path; returns the chosen spec or None (error shown)."""
    labels = list(options) + [CUSTOM_LABEL]
    choice = st.selectbox(f"{kind.capitalize()} model", labels, key=f"{key}_choice")
    if choice == CUSTOM_LABEL:
        typed = st.text_input(f"Path of a {kind} directory", key=f"{key}_path",
                              placeholder="/path/to/artifact_dir")
        problem = _check_model_dir(typed, kind)
        if problem:
            st.error(f"Model path: {problem}", icon=":material/error:")
            return None
        return str(Path(typed.strip()).expanduser())
    return options[choice]


def _device_row() -> None:
    info = run_guarded("Device check", device_info)
    if info is None:
        return
    cols = st.columns(4)
    cols[0].metric("Device in use", info["device"].upper(), help="what device='auto' resolves to (cuda > mps > cpu)")
    cols[1].metric("PyTorch", info["torch"])
    cols[2].metric("CUDA", "yes" if info["cuda"] else "no", help=info["gpu_name"] or "no CUDA GPU visible to PyTorch")
    faiss_state = "not installed" if info["faiss"] is None else (f"yes ({info['faiss_gpus']} GPU)" if info["faiss_gpus"] else "no (CPU index)")
    cols[3].metric("FAISS GPU", faiss_state, help=f"faiss {info['faiss']}" if info["faiss"] else None)


def _probability_chart(probabilities: dict[str, float], best: str):
    """Horizontal bars of the class probabilities on a fixed 0-1 axis, the predicted label highlighted."""
    import altair as alt
    import pandas as pd

    df = pd.DataFrame({"label": list(probabilities), "probability": list(probabilities.values())})
    df["predicted"] = df["label"] == best
    base = alt.Chart(df).encode(
        y=alt.Y("label:N", sort="-x", title=None, axis=alt.Axis(labelOverlap=False, labelLimit=160)),
        x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"), title="probability"))
    bars = base.mark_bar().encode(color=alt.condition("datum.predicted", alt.value("#1f6feb"), alt.value("#9db7d8")))
    text = base.mark_text(align="left", dx=4).encode(text=alt.Text("probability:Q", format=".1%"))
    return (bars + text).properties(height=alt.Step(34))


def _classify_section(base: Path, classifiers: list[Path]) -> None:
    st.subheader("Classify a text", anchor="classify")
    options: dict[str, str] = {}
    demo = core_demo_classifier(base)
    for path in sorted(classifiers, key=lambda p: p != demo):
        label = "Demo classifier (core/demo_classifier)" if path == demo else _rel(path, base)
        options[label] = str(path)
    if not options:
        st.info(f"No classifier artifact under `{base}` yet: run `make demo` "
                "(or `python -m verticore.demo --prepare-only`), or pick “Custom path…”.", icon=":material/info:")
    model = _model_picker("classifier", options, "core_clf")
    text = st.text_area("Text to classify", value=EXAMPLE_CLASSIFY, key="core_clf_text", height=100)
    clicked = st.button("Classify", key="core_clf_btn", type="primary", disabled=model is None)
    if clicked and model is not None:
        if not text.strip():
            st.error("Type a text to classify first.", icon=":material/error:")
        else:
            def _predict() -> dict[str, Any]:
                clf = load_classifier(model, _stamp(model))
                return {"model": model, "text": text, "prediction": clf.predict(text, top_k=len(clf.labels)).to_dict(),
                        "device": getattr(clf, "resolved_device", "?"), "temperature": float(clf.temperature),
                        # an ensemble averages members that are each calibrated
                        "calibrated": any((Path(model) / f).is_file() for f in ("calibration.json", "ensemble.json"))}

            result = run_guarded("Classification", _predict)
            st.session_state["core_clf_result"] = result
    result = st.session_state.get("core_clf_result")
    if result and result.get("model") == model:
        pred = result["prediction"]
        c1, c2, c3 = st.columns(3)
        c1.metric("Label", pred["label"])
        c2.metric("Confidence", f"{pred['score']:.1%}")
        c3.metric("Chunks used", pred["chunks"], help="texts longer than the model window are split into chunks "
                                                     "whose probabilities are averaged")
        st.altair_chart(_probability_chart(pred["probabilities"], pred["label"]))
        how = (f"Calibrated probabilities (temperature {result['temperature']:.2f} fitted on dev)" if result["calibrated"]
               else "Probabilities (uncalibrated: the artifact has no calibration.json)")
        st.caption(f"{how} · model `{_rel(Path(result['model']), base)}` · device {result['device']}")


def _embed_section(base: Path, embedders: list[Path]) -> None:
    st.subheader("Embed a text", anchor="embed")
    options = {DEFAULT_EMBEDDER_LABEL: "default"}
    for path in embedders:
        options[_rel(path, base)] = str(path)
    model = _model_picker("embedder", options, "core_emb")
    text_a = st.text_area("Text", value=EXAMPLE_EMBED_A, key="core_emb_text", height=100)
    text_b = st.text_input("Compare with (optional)", value=EXAMPLE_EMBED_B, key="core_emb_other")
    clicked = st.button("Embed", key="core_emb_btn", type="primary", disabled=model is None)
    if clicked and model is not None:
        if not text_a.strip():
            st.error("Type a text to embed first.", icon=":material/error:")
        else:
            def _embed() -> dict[str, Any]:
                import numpy as np

                emb = load_embedder(model, _stamp(model) if model != "default" else 0.0)
                texts = [text_a] + ([text_b] if text_b.strip() else [])
                vecs = emb.encode(texts)
                out = {"model": model, "dimension": int(vecs.shape[1]), "norm": float(np.linalg.norm(vecs[0])),
                       "first": [float(x) for x in vecs[0][:8]], "cosine": None, "fingerprint": emb.fingerprint}
                if len(texts) == 2:
                    a, b = vecs[0], vecs[1]
                    out["cosine"] = float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))
                return out

            st.session_state["core_emb_result"] = run_guarded("Embedding", _embed)
    result = st.session_state.get("core_emb_result")
    if result and result.get("model") == model:
        c1, c2, c3 = st.columns(3)
        c1.metric("Dimension", result["dimension"])
        c2.metric("L2 norm", f"{result['norm']:.4f}")
        c3.metric("Cosine similarity", "—" if result["cosine"] is None else f"{result['cosine']:.3f}",
                  help="cosine between the two texts' embeddings")
        values = ", ".join(f"{v:+.4f}" for v in result["first"])
        st.caption(f"First {len(result['first'])} of {result['dimension']} values")
        st.code(f"[{values}, …]", language=None, wrap_lines=True)
        shown = result["model"] if result["model"] == "default" else _rel(Path(result["model"]), base)
        st.caption(f"Weights fingerprint `{result['fingerprint']}` · model `{shown}`")


def render() -> None:
    """Draw the page."""
    base = home()
    st.title("Core: models")
    st.caption(f"Demo state (VERTICORE_HOME): `{base}`")
    _device_row()
    artifacts = find_artifacts(base)
    left, right = st.columns(2, gap="large")
    with left:
        _classify_section(base, artifacts["classifier"])
    with right:
        _embed_section(base, artifacts["embedder"])


render()
