"""Optional MLflow logging of registered versions and gate results.

MLflow is never required: when it is not installed these functions do nothing, and when it fails
the registry goes on (a warning is logged). Without ``MLFLOW_TRACKING_URI`` runs go to a local
file store beside the registry (``<registry>/mlruns``).
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from ..settings import get_settings
from .store import _flatten, _is_number

if TYPE_CHECKING:
    from .gate import GateResult
    from .store import ModelRegistry, ModelVersion

log = logging.getLogger(__name__)


def _mlflow() -> Any | None:
    if not get_settings().mlflow:
        return None
    try:
        import mlflow  # type: ignore[import-not-found]
    except ImportError:
        return None
    return mlflow


def _numbers(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in _flatten(d).items() if _is_number(v)}


def _start(registry: "ModelRegistry", version: "ModelVersion", run_name: str) -> Any | None:
    mlflow = _mlflow()
    if mlflow is None:
        return None
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri((registry.root / "mlruns").resolve().as_uri())
    mlflow.set_experiment(f"{version.app}/{version.model}")
    return mlflow.start_run(run_name=run_name)


def log_version(registry: "ModelRegistry", version: "ModelVersion") -> bool:
    """Log a new version's recipe (params) and metrics to MLflow; True when logged."""
    try:
        run = _start(registry, version, f"v{version.version}")
        if run is None:
            return False
        import mlflow  # type: ignore[import-not-found]

        with run:
            mlflow.set_tags({"verticore.version": version.version, "verticore.parent": version.parent,
                             "verticore.data_fingerprint": version.data_fingerprint,
                             "verticore.eval_split": version.eval_split, "verticore.created_by": version.created_by})
            params = {k: str(v)[:500] for k, v in _flatten(version.recipe).items()}
            if params:
                mlflow.log_params(params)
            metrics = _numbers(version.metrics)
            if metrics:
                mlflow.log_metrics(metrics)
        return True
    except Exception as exc:  # tracking is best effort: the registry is the source of truth
        log.warning("MLflow logging of %s failed: %s", version.name, exc)
        return False


def log_gate(registry: "ModelRegistry", version: "ModelVersion", result: "GateResult") -> bool:
    """Log a gate comparison to MLflow; True when logged."""
    try:
        run = _start(registry, version, f"v{version.version}-gate")
        if run is None:
            return False
        import mlflow  # type: ignore[import-not-found]

        with run:
            mlflow.set_tags({"verticore.version": version.version, "verticore.gate": "passed" if result.passed else "failed"})
            mlflow.log_metrics({"gate.candidate": result.candidate, "gate.production": result.production,
                                "gate.delta": result.delta, "gate.ci_low": result.ci_low, "gate.ci_high": result.ci_high,
                                "gate.mcnemar_p": result.mcnemar.p_value})
        return True
    except Exception as exc:
        log.warning("MLflow logging of the gate of %s failed: %s", version.name, exc)
        return False
