"""Model registry and promotion gate (issue #14 groundwork).

::

    reg = ModelRegistry()                      # $VERTICORE_HOME/registry
    v = reg.register("my_app", "intent", "runs/intent", data_fingerprint=fp,
                     recipe={"epochs": 3}, metrics={"accuracy": 0.91}, eval_split="intent-eval-v1")
    reg.gate("my_app", "intent", v.version, y_true=y, candidate_pred=new, production_pred=old,
             tolerance=0.01, floors={"*": 0.6})
    reg.promote("my_app", "intent", v.version)      # refused if the gate failed
    handle = reg.watch("my_app", "intent", loader=load_classifier)
    handle.get()                                # follows production without a restart
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {"GateResult": "gate", "McNemar": "gate", "compare": "gate", "compare_correctness": "gate",
            "macro_f1_resamples": "gate", "mcnemar_exact": "gate", "paired_bootstrap_ci": "gate", "Incomplete": "store", "ModelRegistry": "store",
            "ModelVersion": "store", "default_root": "store", "ModelHandle": "watch"}


def __getattr__(name: str) -> Any:
    # Lazy: `verticore models ...` and `import verticore.registry.cli` stay free of numpy/pandas imports.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(name)


__all__ = sorted(_EXPORTS)
