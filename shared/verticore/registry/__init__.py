"""Model registry and promotion gate (issue #14 groundwork).

::

    reg = ModelRegistry()                      # $VERTICORE_HOME/registry
    v = reg.register("customer_service", "intent", "runs/intent", data_fingerprint=fp,
                     recipe={"epochs": 3}, metrics={"accuracy": 0.91}, eval_split="intent-eval-v1")
    reg.gate("customer_service", "intent", v.version, y_true=y, candidate_pred=new, production_pred=old,
             tolerance=0.01, floors={"*": 0.6})
    reg.promote("customer_service", "intent", v.version)      # refused if the gate failed
    handle = reg.watch("customer_service", "intent", loader=load_classifier)
    handle.get()                                # follows production without a restart
"""
from __future__ import annotations

from .gate import GateResult, McNemar, compare, compare_correctness, mcnemar_exact, paired_bootstrap_ci
from .store import Incomplete, ModelRegistry, ModelVersion, default_root
from .watch import ModelHandle

__all__ = ["GateResult", "Incomplete", "McNemar", "ModelHandle", "ModelRegistry", "ModelVersion", "compare",
           "compare_correctness", "default_root", "mcnemar_exact", "paired_bootstrap_ci"]
