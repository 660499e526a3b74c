"""ONNX Runtime backends: ``onnx`` (fp32, fused) and ``onnx-int8`` (dynamic int8 quantisation).

The encoder is exported once with ``torch.onnx.export`` -- pooling (``head="pool"``) or the
classification head (``head="logits"``) baked into the graph, dynamic batch and sequence axes --
then, for BERT-family models, rewritten by ONNX Runtime's transformer optimiser (fused
``Attention``, ``SkipLayerNormalization``, ``BiasGelu``, ``EmbedLayerNormalization``). Every
export is checked against PyTorch on a padded batch before it is used; a fused graph that does
not match falls back to the plain export.

Exports are cached outside the model directory (which may be read-only)::

    $VERTICORE_CACHE/onnx/<fingerprint>-<head>-<pooling>-<variant>-r<recipe>.onnx   (+ .json sidecar)

``$VERTICORE_CACHE`` defaults to ``~/.cache/verticore``. Files are written atomically and the
sidecar records the file's SHA-256, so a truncated or corrupt cache file is detected and the
model is re-exported. When the cache cannot be written the model is kept in memory instead.

Sessions use ``ORT_ENABLE_ALL`` graph optimisation and one intra-op thread per physical core
(``VERTICORE_NUM_THREADS`` overrides). On a CUDA device the ``CUDAExecutionProvider`` is used
when the installed onnxruntime has it (``onnxruntime-gpu``); otherwise a clear error says to use
the ``torch`` backend on GPU.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort  # noqa: F401  (ImportError here keeps these backends unregistered)

from ..errors import ArtifactError, VerticoreError
from ..io import atomic_write_json
from ..models import model_fingerprint
from ..settings import get_settings
from ..text import utc_iso
from .backends import register_backend
from .loading import load_torch_model
from .pooling import pool, pooling_mode

log = logging.getLogger(__name__)

#: Bump when the export recipe changes so stale cache files are not reused.
RECIPE_VERSION = 2
#: ``config.model_type`` values ONNX Runtime's ``bert`` fusion handles.
_FUSABLE = {"bert", "roberta", "xlm-roberta", "camembert", "electra"}
_VARIANTS = ("fp32", "int8")


def cache_root() -> Path:
    """``$VERTICORE_CACHE/onnx`` (default ``~/.cache/verticore/onnx``)."""
    return get_settings().cache / "onnx"


def physical_cores() -> int:
    """Intra-op threads to use: ``VERTICORE_NUM_THREADS`` or physical cores available to this process."""
    configured = get_settings().num_threads
    if configured is not None:
        return configured
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    try:
        import psutil

        phys = psutil.cpu_count(logical=False) or usable
    except Exception:
        phys = usable
    return max(1, min(usable, phys))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _model_type(model_dir: Path) -> str:
    try:
        return str(json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")).get("model_type", ""))
    except Exception:
        return ""


def _hidden_and_heads(model) -> tuple[int, int]:
    cfg = model.config
    return int(getattr(cfg, "hidden_size", 0) or 0), int(getattr(cfg, "num_attention_heads", 0) or 0)


class _Wrapped:
    """Builds the torch module that is exported: encoder + pooling, or the logits head."""

    @staticmethod
    def build(model, head: str, pooling: str):
        import torch

        class PoolModule(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask):
                hidden = self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                return pool(hidden, attention_mask, pooling)

        class LogitsModule(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask):
                return self.m(input_ids=input_ids, attention_mask=attention_mask).logits

        return (PoolModule if head == "pool" else LogitsModule)(model).eval()


def _check_batch(vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """A padded batch with a shape unlike the export example (catches baked-in shapes)."""
    rng = np.random.default_rng(0)
    lengths = [23, 9, 17]
    width = max(lengths)
    ids = np.zeros((len(lengths), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    hi = max(3, min(vocab_size, 30000))
    for r, n in enumerate(lengths):
        ids[r, :n] = rng.integers(1000 if hi > 2000 else 1, hi, size=n)
        ids[r, 0], ids[r, n - 1] = 101 if hi > 102 else 1, 102 if hi > 102 else 2
        mask[r, :n] = 1
    return ids, mask


class OnnxExporter:
    """Export (and cache) one model/head/variant as an ONNX graph.

    Args:
        model_dir: a Hugging Face / sentence-transformers model directory.
        head: ``"pool"`` (sentence vectors) or ``"logits"`` (classification head).
        pooling: ``mean`` / ``cls`` / ``max`` (default: read from ``1_Pooling``).
        variant: ``"fp32"`` or ``"int8"`` (dynamic int8, selective: see :func:`_quantize`).
        fuse: apply ONNX Runtime's transformer fusion for BERT-family models.
    """

    def __init__(self, model_dir: Path, head: str = "pool", pooling: str | None = None, variant: str = "fp32",
                 fuse: bool = True) -> None:
        if head not in {"pool", "logits"}:
            raise VerticoreError(f"unknown head {head!r}; use 'pool' or 'logits'")
        if variant not in _VARIANTS:
            raise VerticoreError(f"unknown ONNX variant {variant!r}; use one of {list(_VARIANTS)}")
        self.model_dir = Path(model_dir)
        self.head = head
        self.pooling = pooling or pooling_mode(self.model_dir)
        self.variant = variant
        self.fuse = fuse and _model_type(self.model_dir) in _FUSABLE
        fp = model_fingerprint(self.model_dir).split(":")[-1]
        tag = "fused" if self.fuse else "plain"
        pool_tag = self.pooling if head == "pool" else "head"
        self.name = f"{fp}-{head}-{pool_tag}-{variant}-{tag}-r{RECIPE_VERSION}"
        self.fingerprint = fp

    @property
    def path(self) -> Path:
        return cache_root() / f"{self.name}.onnx"

    @property
    def meta_path(self) -> Path:
        return cache_root() / f"{self.name}.json"

    # -- cache --------------------------------------------------------------------------
    def cached(self) -> Path | None:
        """The cached file when present and intact (size and SHA-256 match the sidecar)."""
        if not self.path.exists():
            return None
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
            ok = (meta.get("size") == self.path.stat().st_size and meta.get("sha256") == _sha256(self.path)
                  and meta.get("recipe") == RECIPE_VERSION)
        except (OSError, ValueError, AttributeError):
            ok = False
        if not ok:
            warnings.warn(f"cached ONNX model {self.path} is corrupt or incomplete; re-exporting", stacklevel=3)
            return None
        return self.path

    def load_or_export(self) -> Path | bytes:
        """Path of an intact cached export, exporting first when needed.

        Returns the serialized model instead of a path when the cache dir is not writable.
        """
        hit = self.cached()
        if hit is not None:
            return hit
        with tempfile.TemporaryDirectory(prefix="verticore-onnx-") as tmp:
            built, info = self._build(Path(tmp))
            data = built.read_bytes()
            try:
                self._store(built, info)
            except OSError as exc:
                warnings.warn(f"could not write the ONNX cache under {cache_root()} ({exc.strerror or exc}); "
                              "keeping the exported model in memory (set VERTICORE_CACHE to a writable folder)",
                              stacklevel=3)
                return data
        return self.path

    def _store(self, built: Path, info: dict[str, Any]) -> None:
        root = cache_root()
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=root)
        os.close(fd)
        try:
            with open(built, "rb") as src, open(tmp, "wb") as dst:
                while block := src.read(1 << 22):
                    dst.write(block)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        atomic_write_json(self.meta_path, {**info, "size": self.path.stat().st_size, "sha256": _sha256(self.path)})

    # -- export -------------------------------------------------------------------------
    def _build(self, tmp: Path) -> tuple[Path, dict[str, Any]]:
        import torch

        model = self._load_torch()
        wrapped = _Wrapped.build(model, self.head, self.pooling)
        vocab = int(getattr(model.config, "vocab_size", 30522) or 30522)
        ids, mask = _check_batch(vocab)
        with torch.inference_mode():
            expected = wrapped(torch.from_numpy(ids), torch.from_numpy(mask)).float().numpy()

        plain = tmp / "plain.onnx"
        self._export(wrapped, plain)
        chosen, fused = plain, False
        if self.fuse:
            fused_path = tmp / "fused.onnx"
            if self._fuse(plain, fused_path, model):
                err = _max_err(_run_file(fused_path, ids, mask), expected)
                if err <= 1e-3 * max(1.0, float(np.abs(expected).max())):
                    chosen, fused = fused_path, True
                else:
                    log.info("fused ONNX graph differs from torch (max err %.2e); using the plain export", err)
        err = _max_err(_run_file(chosen, ids, mask), expected)
        if err > 1e-3 * max(1.0, float(np.abs(expected).max())):
            raise ArtifactError(f"ONNX export of {self.model_dir} does not match PyTorch (max abs error {err:.2e}); "
                                "use backend 'torch' for this model")
        qinfo: dict[str, Any] = {}
        if self.variant == "int8":
            q = tmp / "int8.onnx"
            calib = self._calibration_batch()
            qinfo = _quantize(chosen, q, calib=calib, min_cosine=INT8_MIN_COSINE if self.head == "pool" else None)
            qinfo["int8_calibration_rel_err"] = _rel_err(_run_file(q, *calib), _run_file(chosen, *calib))
            got = _run_file(q, ids, mask)
            if not np.isfinite(got).all():
                raise ArtifactError(f"int8 quantisation of {self.model_dir} produced non-finite outputs; use backend 'onnx'")
            chosen = q
        import onnxruntime
        import transformers

        info = {"recipe": RECIPE_VERSION, "model_dir": str(self.model_dir), "model_fingerprint": self.fingerprint,
                "head": self.head, "pooling": self.pooling, "variant": self.variant, "fused": fused,
                **qinfo,
                "created_at": utc_iso(),
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                             "onnxruntime": onnxruntime.__version__}}
        return chosen, info

    def _calibration_batch(self) -> tuple[np.ndarray, np.ndarray]:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(self.model_dir))
        except Exception as exc:
            raise ArtifactError(f"could not load tokenizer from {self.model_dir}: {str(exc).splitlines()[0][:200]}") from None
        enc = tok(CALIBRATION, padding=True, truncation=True, max_length=128, return_tensors="np")
        return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)

    def _load_torch(self):
        # Eager attention exports the classic MatMul/Softmax pattern ORT's fusion recognises.
        try:
            return load_torch_model(self.model_dir, self.head, attn_implementation="eager").eval()
        except ArtifactError:
            raise
        except Exception:  # an architecture without an eager implementation
            return load_torch_model(self.model_dir, self.head).eval()

    def _export(self, wrapped, out: Path) -> None:
        import torch

        ids = torch.ones(2, 16, dtype=torch.long)
        mask = torch.ones(2, 16, dtype=torch.long)
        mask[1, 10:] = 0
        axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "output": {0: "batch"}}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(wrapped, (ids, mask), str(out), input_names=["input_ids", "attention_mask"],
                                  output_names=["output"], dynamic_axes=axes, opset_version=17, dynamo=False,
                                  do_constant_folding=True)
        except Exception as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"could not export {self.model_dir} to ONNX ({msg[:200]}); use backend 'torch'") from None

    def _fuse(self, src: Path, dst: Path, model) -> bool:
        hidden, heads = _hidden_and_heads(model)
        if not hidden or not heads:
            return False
        try:
            from onnxruntime.transformers import optimizer

            logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                opt = optimizer.optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=hidden,
                                               opt_level=1)
                opt.save_model_to_file(str(dst))
            return True
        except Exception as exc:  # fusion is an optimisation; the plain export still works
            log.info("ONNX Runtime fusion failed (%s); using the plain export", exc)
            return False


#: Share of the summed per-node int8 error that selective quantisation removes, by keeping the
#: nodes with the most error per weight in fp32. Measured on all-MiniLM-L6-v2 with 2,000 real
#: phrasebank sentences: quantising every MatMul/Attention (per-channel int8 weights) gives
#: cosine_min 0.977 at ~1.7x; keeping the worst ~8 of 24 nodes in fp32 gives cosine_min ~0.992
#: at ~1.3x per CPU-second (see bench/throughput.py).
INT8_ERROR_REMOVED = 0.65

#: Embedding (pool-head) graphs then keep further nodes in fp32, in the same order, until every
#: calibration sentence's int8 embedding has cosine >= this to fp32. The bar users are promised
#: is 0.99 on real data; the margin covers sentences unlike the calibration set.
INT8_MIN_COSINE = 0.995

#: Calibration sentences for the sensitivity scan (written for this project).
CALIBRATION = [
    "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn a year earlier.",
    "The company expects net sales to decrease slightly compared to last year.",
    "Shares fell 4% after the profit warning.",
    "The board proposes a dividend of EUR 0.50 per share.",
    "The contract is valued at approximately USD 12 million and runs until 2012.",
    "Production at the plant will be halted for two weeks in July due to weak demand.",
    "I lost my card yesterday, how do I block it?",
    "Why was my transfer declined even though I have enough money on the account?",
    "My top-up is still pending.",
    "How long does it take for a new card to arrive in Germany?",
    "Please cancel my subscription before the next billing cycle.",
    "Great service, the refund arrived within an hour!",
    "The delivery was late and the package was damaged, I want my money back.",
    "Headcount will be reduced by about 150 people as part of the restructuring programme.",
    "Earnings per share were EUR 0.12, down from EUR 0.15.",
    "Analysts had expected a sharper drop in quarterly revenue.",
    "A quiet film about grief that lingers long after the credits.",
    "Add two cups of flour and stir until smooth.",
    "The match was postponed because of heavy rain.",
    "ok",
    "Where is my order #4521?",
    "Interest rates are expected to stay low for an extended period, which supports mortgage lending "
    "but puts pressure on net interest margins across the sector.",
    "The new terminal is expected to be operational by the end of 2010, the port authority said.",
    "Customer support was friendly but could not solve the billing problem I reported twice.",
]


def _quantize(src: Path, dst: Path, calib: tuple[np.ndarray, np.ndarray] | None = None,
              exclude: list[str] | None = None, min_cosine: float | None = None) -> dict[str, Any]:
    """Dynamic int8 (per-channel weights) of every MatMul/Attention except the most sensitive.

    With ``calib`` the sensitivity of each node is measured end to end (quantise that node alone,
    compare outputs with the fp32 graph); nodes are kept in fp32 in order of error per weight
    until :data:`INT8_ERROR_REMOVED` of the summed error is gone, and then (``min_cosine``) until
    the worst calibration row's cosine to fp32 reaches ``min_cosine``.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from tqdm.auto import tqdm

    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in ("MatMul", "Attention") and len(n.input) > 1
             and n.input[1] in inits]
    sizes = {n.name: int(np.prod(inits[n.input[1]].dims)) for n in nodes}
    opts = {"DefaultTensorType": onnx.TensorProto.FLOAT}

    def q(out: Path, only: list[str] | None = None, excl: list[str] | None = None) -> None:
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint on every call
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_dynamic(model, str(out), weight_type=QuantType.QInt8, per_channel=True,
                                 nodes_to_quantize=only, nodes_to_exclude=excl or [], extra_options=opts)
        finally:
            root.setLevel(level)

    errors: dict[str, float] = {}
    if exclude is None and calib is not None and nodes:
        ids, mask = calib
        ref = _run_file(src, ids, mask)
        probe = dst.with_name("probe.onnx")
        for n in tqdm(nodes, desc="int8 sensitivity", unit="node", leave=False):
            q(probe, only=[n.name])
            errors[n.name] = _rel_err(_run_file(probe, ids, mask), ref)
        total = sum(errors.values())
        order = sorted(errors, key=lambda k: errors[k] / max(sizes[k], 1), reverse=True)
        exclude, left = [], total
        for name in order:
            if left <= (1.0 - INT8_ERROR_REMOVED) * total:
                break
            exclude.append(name)
            left -= errors[name]
    exclude = list(exclude or [])
    q(dst, excl=exclude)
    worst = None
    if min_cosine is not None and calib is not None and errors:
        ref = _run_file(src, *calib)
        rest = [n for n in sorted(errors, key=lambda k: errors[k] / max(sizes[k], 1), reverse=True) if n not in exclude]
        while True:
            worst = _min_cosine(_run_file(dst, *calib), ref)
            if worst >= min_cosine or not rest:
                break
            exclude.append(rest.pop(0))
            q(dst, excl=exclude)
    kept = sum(sizes.get(n, 0) for n in exclude) / max(sum(sizes.values()), 1)
    return {"int8_fp32_nodes": exclude, "int8_fp32_weight_share": round(kept, 4),
            "int8_calibration_min_cosine": None if worst is None else round(worst, 6),
            "int8_node_errors": {k: round(v, 8) for k, v in errors.items()}}


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest row-wise cosine between ``a`` and ``b``."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    num = np.sum(a * b, axis=1)
    den = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(np.min(num / den))


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """Mean relative squared error of rows of ``a`` against ``b``."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return float(np.mean(np.sum((a - b) ** 2, axis=1) / np.maximum(np.sum(b ** 2, axis=1), 1e-12)))


def _session_options(threads: int | None = None):

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(threads or physical_cores())
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning worker threads steal cycles from the tokenizer and other processes; batch
    # throughput does not need it. VERTICORE_ORT_SPIN=1 turns it back on.
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if get_settings().ort_spin else "0")
    so.log_severity_level = 3
    return so


def _run_file(path: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:

    sess = ort.InferenceSession(str(path), _session_options(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]


def _max_err(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def _providers(device: str) -> list:

    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise VerticoreError("this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu), "
                                 "or use backend 'torch' on GPU")
        idx = int(device.split(":", 1)[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": idx}), "CPUExecutionProvider"]
    raise VerticoreError(f"ONNX backends run on cpu or cuda, not {device!r}; use backend 'torch'")


class OnnxBackend:
    """ONNX Runtime execution of an exported encoder (see module docs).

    Args:
        model_dir: model directory.
        head: ``"pool"`` or ``"logits"``.
        device: ``cpu`` or ``cuda[:i]``.
        dtype, compile: accepted for interface compatibility (ONNX graphs here are fp32 / int8).
        pooling: override the pooling read from the model folder.
        num_threads: intra-op threads (default: physical cores).
        variant: ``fp32`` or ``int8``.
    """

    variant = "fp32"

    def __init__(self, model_dir: Path, head: str = "pool", device: str = "cpu", dtype=None, compile: bool = False,
                 pooling: str | None = None, num_threads: int | None = None, fuse: bool = True, **_: Any) -> None:

        self.device = str(device)
        self.head = head
        providers = _providers(self.device)
        self.exporter = OnnxExporter(Path(model_dir), head=head, pooling=pooling, variant=self.variant, fuse=fuse)
        source = self.exporter.load_or_export()
        self.source = source if isinstance(source, Path) else None
        try:
            self.session = ort.InferenceSession(source if isinstance(source, bytes) else str(source),
                                                _session_options(num_threads), providers=providers)
        except Exception as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"ONNX Runtime could not load {self.source or 'the exported model'}: {msg[:200]}") from None
        self._inputs = {i.name for i in self.session.get_inputs()}

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": np.ascontiguousarray(input_ids, dtype=np.int64),
                 "attention_mask": np.ascontiguousarray(attention_mask, dtype=np.int64)}
        out = self.session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
        return np.asarray(out, dtype=np.float32)


@register_backend("onnx")
class OnnxFp32Backend(OnnxBackend):
    """ONNX Runtime, fp32, fused attention: matches PyTorch fp32 to ~1e-6."""

    variant = "fp32"


@register_backend("onnx-int8")
class OnnxInt8Backend(OnnxBackend):
    """ONNX Runtime with dynamic int8 weights (``onnxruntime.quantization.quantize_dynamic``); CPU."""

    variant = "int8"

    def __init__(self, model_dir: Path, head: str = "pool", device: str = "cpu", **kwargs: Any) -> None:
        if device != "cpu":
            raise VerticoreError("backend onnx-int8 runs on CPU only; use backend 'onnx' or 'torch' on GPU")
        super().__init__(model_dir, head=head, device=device, **kwargs)
