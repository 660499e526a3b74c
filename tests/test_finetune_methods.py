"""Fine-tuning methods are registered (name, config class, method), peft style: their options live in
their own config class, the CLI lists them, and a plugin adds one through an entry point alone."""
import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import fields, replace

import pytest

from verticore.errors import VerticoreError
from verticore.finetune import ClassifierTrainingConfig, TokenClassifierTrainingConfig
from verticore.finetune.methods import (
    METHODS,
    available_methods,
    get_method,
    method_config,
    method_options,
    parse_method_args,
    register_method,
)
from verticore.finetune.methods.full import FullMethodConfig
from verticore.finetune.methods.lora import LoraMethodConfig


def test_builtin_methods_are_registered_with_their_config_classes():
    assert {"full", "lora"} <= set(available_methods())
    assert METHODS.get("lora").config_class is LoraMethodConfig
    assert METHODS.get("full").config_class is FullMethodConfig
    assert method_options("lora") == {"r": 16, "alpha": 32, "dropout": 0.1,
                                      "target_modules": ["query", "key", "value", "dense"], "learning_rate": 5e-4}
    lora = get_method("lora", {"r": 4})
    assert lora.name == "lora" and lora.config.r == 4 and lora.config.alpha == 32


def test_a_duplicate_method_name_is_refused():
    with pytest.raises(VerticoreError, match="already registered"):
        @register_method("lora", FullMethodConfig)
        class Impostor:  # noqa: F841 - the decorator is what is tested
            pass


def test_method_options_are_validated_by_the_method_config_class():
    with pytest.raises(VerticoreError, match=r"unknown option 'rank'.*options are: r, alpha"):
        method_config("lora", {"rank": 8})
    with pytest.raises(VerticoreError, match=r"option 'dropout'"):
        ClassifierTrainingConfig(method="lora", method_args={"dropout": 1.5})
    with pytest.raises(VerticoreError, match="unknown option 'r'"):
        ClassifierTrainingConfig(method="full", method_args={"r": 8})  # full has no options
    with pytest.raises(VerticoreError, match="unknown fine-tuning method 'qlora'"):
        ClassifierTrainingConfig(method="qlora")
    cfg = method_config("lora", parse_method_args(["r=8", "target_modules=query,value", "learning_rate=1e-3"]))
    assert (cfg.r, cfg.target_modules, cfg.learning_rate) == (8, ["query", "value"], 1e-3)
    with pytest.raises(VerticoreError, match="not key=value"):
        parse_method_args(["r8"])


def test_lora_options_left_the_core_config_but_old_keywords_still_work():
    core_fields = {f.name for f in fields(ClassifierTrainingConfig)}  # the lora_* keywords are InitVars
    assert not {f for f in core_fields if f.startswith("lora")}
    cfg = ClassifierTrainingConfig(method="lora", lora_learning_rate=8e-4, lora_r=8)
    assert cfg.method_config().learning_rate == 8e-4 and cfg.method_config().r == 8
    assert cfg.lora_learning_rate == 8e-4
    cfg.lora_learning_rate = 1e-3  # attribute assignment (apps do this) reaches the method options
    assert cfg.method_config().learning_rate == 1e-3
    assert replace(cfg, head_init="random").method_config() == cfg.method_config()
    # for another method the LoRA keywords are ignored, as they always were
    full = ClassifierTrainingConfig(method="full", lora_learning_rate=8e-4)
    assert full.method_args == {} and full.to_dict()["method_args"] == {}
    assert ClassifierTrainingConfig(method="lora").to_dict()["method_args"]["r"] == 16
    # the token classifier keeps its larger LoRA learning rate as a per-method default
    assert TokenClassifierTrainingConfig(method="lora").method_config().learning_rate == 1e-3
    assert TokenClassifierTrainingConfig(method="lora", lora_learning_rate=None).method_config().learning_rate is None


def _plain(text: str) -> str:
    """CLI output without rich's box drawing and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_cli_method_arg_errors_are_usage_errors(tmp_path):
    from typer.testing import CliRunner

    from verticore.cli import app

    runner = CliRunner()
    common = ["finetune", "--train", str(tmp_path / "t.csv"), "--dev", str(tmp_path / "d.csv"),
              "--out", str(tmp_path / "o")]
    res = runner.invoke(app, [*common, "--method", "lora", "--method-arg", "rank=3"])
    assert res.exit_code == 2 and "unknown option 'rank'" in _plain(res.output)
    res = runner.invoke(app, [*common, "--method", "nope"])
    assert res.exit_code == 2 and "choose one of full, lora" in _plain(res.output)
    res = runner.invoke(app, [*common, "--ema-decay", "1.0"])
    assert res.exit_code == 2 and "--ema-decay" in _plain(res.output) and "(0, 1)" in _plain(res.output)
    assert not (tmp_path / "o").exists()


PLUGIN = '''
"""A third-party method: train only the classification head, the encoder stays frozen."""
from pydantic import BaseModel, ConfigDict, Field

from verticore.finetune.methods import register_method


class HeadOnlyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    learning_rate: float = Field(1e-3, gt=0)


@register_method("head_only", HeadOnlyConfig)
class HeadOnly:
    def __init__(self, config):
        self.config = config

    def prepare(self, model):
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("classifier"))
        return model

    def parameter_groups(self, model, training):
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": 0.0,
                 "lr": self.config.learning_rate}]

    def finalize(self, model, out_dir):
        return model
'''


def test_a_plugin_method_arrives_through_an_entry_point(tmp_path, tiny_sentiment):
    """One module plus an entry point: the method is a --method choice and trains, the core untouched."""
    plugins = tmp_path / "site"
    plugins.mkdir()
    (plugins / "head_only_method.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    dist = plugins / "head_only_method-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: head-only-method\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text("[verticore.finetune_methods]\nhead_only = head_only_method\n",
                                           encoding="utf-8")
    df = tiny_sentiment
    df.to_csv(tmp_path / "train.csv", index=False)
    df.iloc[::3].to_csv(tmp_path / "dev.csv", index=False)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cli = [sys.executable, "-c", "from verticore.cli import main; main()", "finetune"]

    help_text = subprocess.run([*cli, "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert help_text.returncode == 0, help_text.stderr
    assert "[full|head_only|lora]" in help_text.stdout

    out = tmp_path / "clf"
    run = subprocess.run([*cli, "--train", str(tmp_path / "train.csv"), "--dev", str(tmp_path / "dev.csv"),
                          "--out", str(out), "--method", "head_only", "--method-arg", "learning_rate=0.01",
                          "--max-steps", "2", "--batch-size", "8", "--max-length", "32", "--device", "cpu"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads((out / "verticore.json").read_text())["method"] == "head_only"
    tc = json.loads((out / "training_config.json").read_text())
    assert tc["method"] == "head_only" and tc["method_args"] == {"learning_rate": 0.01}
    # it really was the plugin's method: the encoder weights are the base model's, untouched
    from safetensors import safe_open

    from verticore import resolve_model

    key = "encoder.layer.0.attention.self.query.weight"
    with safe_open(str(out / "model.safetensors"), "pt") as trained:
        tuned = trained.get_tensor(next(k for k in trained.keys() if k.endswith(key)))
    with safe_open(str(resolve_model("default").path / "model.safetensors"), "pt") as base:
        original = base.get_tensor(next(k for k in base.keys() if k.endswith(key)))
    assert (tuned == original).all()

    # a bad option of the plugin's method is a usage error that names its options
    bad = subprocess.run([*cli, "--train", "x", "--dev", "y", "--out", str(tmp_path / "no"), "--method", "head_only",
                          "--method-arg", "lr=1"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown option 'lr'; its options are: learning_rate" in _plain(bad.stderr)
