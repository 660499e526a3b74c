"""`verticore finetune --nproc N`: data-parallel training through torchrun (gloo on CPU) matches a
single-process run with the same effective batch."""
import json
import shutil

import numpy as np
import pytest

from verticore.cli import main


def run(argv, capfd):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capfd.readouterr()
    return exc.value.code, out.out, out.err


def _base_without_dropout(tmp_path):
    """The default model with dropout off: dropout masks are drawn per process, so only without
    dropout can a 2-process run reproduce a 1-process run step for step."""
    from verticore.models import default_model_path

    base = tmp_path / "base"
    shutil.copytree(default_model_path(), base)
    config = json.loads((base / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    (base / "config.json").write_text(json.dumps(config))
    return base


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_effective_batch(tmp_path, capfd, tiny_sentiment):
    from verticore.inference import TextClassifier

    train, dev = tmp_path / "train.csv", tmp_path / "dev.csv"
    # 29 rows, batch 8: the last global batch (5 rows) splits unevenly (3 + 2), class weights on
    tiny_sentiment.iloc[:29].to_csv(train, index=False)
    tiny_sentiment.iloc[::3].to_csv(dev, index=False)
    common = ["finetune", "--train", str(train), "--dev", str(dev), "--base", str(_base_without_dropout(tmp_path)),
              "--epochs", "1", "--batch-size", "8", "--eval-every", "2", "--lr", "1e-4", "--max-length", "48",
              "--device", "cpu"]
    code, _, err = run([*common, "--out", str(tmp_path / "one")], capfd)
    assert code in (0, None), err
    code, out, err = run([*common, "--out", str(tmp_path / "two"), "--nproc", "2"], capfd)
    assert code in (0, None), err
    assert "artifact written" in out and "2 processes, gloo" in out

    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["data_parallel"] == {"world_size": 2, "backend": "gloo"}
    assert (one["steps"], one["best_step"]) == (two["steps"], two["best_step"]) == (4, one["best_step"])
    assert [h["step"] for h in one["history"]] == [h["step"] for h in two["history"]]
    # same global batches, gradients summed across ranks: equal up to float summation order
    # (per-rank padding widths and reduction order differ, ~1e-6 per step; Adam can amplify that a little)
    assert np.allclose([h["loss"] for h in one["history"]], [h["loss"] for h in two["history"]], atol=1e-4)

    texts = tiny_sentiment.text.tolist()
    logits_one, _ = TextClassifier(tmp_path / "one", device="cpu").predict_logits(texts)
    logits_two, _ = TextClassifier(tmp_path / "two", device="cpu").predict_logits(texts)
    diff = float(np.abs(np.asarray(logits_one) - np.asarray(logits_two)).max())
    assert diff < 1e-3, diff
    assert (np.asarray(logits_one).argmax(1) == np.asarray(logits_two).argmax(1)).all()
    assert one["dev"]["macro_f1"] == pytest.approx(two["dev"]["macro_f1"])


def test_nproc_zero_is_a_usage_error(tmp_path, capfd):
    f = tmp_path / "t.csv"
    f.write_text("text,label\na,x\nb,y\n")
    code, _, err = run(["finetune", "--train", str(f), "--dev", str(f), "--out", str(tmp_path / "o"), "--nproc", "0"],
                       capfd)
    assert code == 2 and "--nproc" in err


def test_nproc_without_torch_distributed_is_a_one_line_error(tmp_path, capfd, monkeypatch):
    import torch.distributed

    monkeypatch.setattr(torch.distributed, "is_available", lambda: False)
    f = tmp_path / "t.csv"
    f.write_text("text,label\na,x\nb,y\n")
    code, _, err = run(["finetune", "--train", str(f), "--dev", str(f), "--out", str(tmp_path / "o"), "--nproc", "2"],
                       capfd)
    assert code == 3
    assert err.strip() == "error: --nproc > 1 needs torch.distributed, which this PyTorch build lacks"


def test_nproc_with_ensemble_is_a_usage_error(tmp_path, capfd):
    f = tmp_path / "t.csv"
    f.write_text("text,label\na,x\nb,y\n")
    code, _, err = run(["finetune", "--train", str(f), "--dev", str(f), "--out", str(tmp_path / "o"), "--nproc", "2",
                        "--ensemble"], capfd)
    assert code == 2 and "--ensemble" in err
