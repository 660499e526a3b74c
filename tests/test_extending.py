"""README "Extending Verticore": a new backend is one file plus an entry point, and the core,
the Embedder and the CLI pick it up without an edit. (A new app: tests/test_app_plugins.py;
a new fine-tuning method: tests/test_finetune_methods.py.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN = '''
"""A third-party backend: fp32 torch with every sentence vector negated then re-normalised
(distinguishable from torch, still a valid embedding)."""
from verticore.inference.backends import make_backend, register_backend


class NegatedTorch:
    def __init__(self, **kwargs):
        self.inner = make_backend("torch", **kwargs)
        self.device = self.inner.device

    def run(self, input_ids, attention_mask):
        return -self.inner.run(input_ids, attention_mask)


@register_backend("negated-torch")
def negated_torch(**kwargs):
    return NegatedTorch(**kwargs)
'''


def _install_backend_plugin(root: Path) -> None:
    pkg = root / "my_backend_plugin"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    dist = root / "my_backend_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-backend-plugin\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text("[verticore.backends]\nnegated-torch = my_backend_plugin\n",
                                           encoding="utf-8")


def _run(code_or_args: list[str], root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *code_or_args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_backend_plugin_from_an_entry_point_is_used_by_the_embedder_and_listed_by_the_cli(tmp_path):
    _install_backend_plugin(tmp_path)
    code = textwrap.dedent("""
        import json, numpy as np
        from verticore import Embedder
        from verticore.inference.backends import available_backends
        texts = ["The bank raised its dividend.", "Shipping was late again."]
        a = Embedder("default", backend="torch", device="cpu").encode(texts)
        b = Embedder("default", backend="negated-torch", device="cpu").encode(texts)
        print(json.dumps({"names": available_backends(), "max_err": float(np.abs(a + b).max())}))
    """)
    out = _run(["-c", code], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "negated-torch" in result["names"] and "torch" in result["names"]
    assert result["max_err"] < 1e-5  # the plugin really ran: its vectors are the torch ones negated

    help_out = _run(["-m", "verticore.cli", "embed", "--help"], tmp_path)
    assert help_out.returncode == 0, help_out.stderr[-2000:]
    assert "negated-torch" in help_out.stdout

    # without the plugin on the path the name is refused with a usage error naming the choices
    (tmp_path / "in.csv").write_text("text\nhello\n", encoding="utf-8")
    bad = subprocess.run([sys.executable, "-m", "verticore.cli", "embed", "--input", str(tmp_path / "in.csv"),
                          "--output", str(tmp_path / "out.npy"), "--backend", "negated-torch"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert bad.returncode == 2, bad.stderr[-2000:]
    assert "negated-torch" in bad.stderr and "onnx" in bad.stderr
    assert not (tmp_path / "out.npy").exists()


def test_registry_refuses_a_duplicate_backend_name():
    from verticore.errors import VerticoreError
    from verticore.inference.backends import register_backend

    with pytest.raises(VerticoreError, match="already registered"):
        @register_backend("torch")
        def other_torch(**kwargs):  # pragma: no cover - never called
            raise AssertionError
