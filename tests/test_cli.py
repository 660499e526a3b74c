"""The `verticore` CLI contracts and its one-line errors (exit code 3)."""
import json
import subprocess
import sys

import pandas as pd
import pytest

from verticore.cli import main


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_finetune_predict_eval_contract(tmp_path, capsys, tiny_sentiment):
    train = tmp_path / "train.csv"
    tiny_sentiment.to_csv(train, index=False)
    dev = tmp_path / "dev.jsonl"
    tiny_sentiment.iloc[::3].to_json(dev, orient="records", lines=True)
    out = tmp_path / "model"
    code, stdout, err = run(["finetune", "--train", str(train), "--dev", str(dev), "--test", str(dev), "--text-col", "text",
                             "--label-col", "label", "--out", str(out), "--method", "full", "--base", "default",
                             "--max-steps", "2", "--batch-size", "8", "--max-length", "48"], capsys)
    assert code in (0, None), err
    assert (out / "model.safetensors").exists() and "artifact written" in stdout
    assert "test" in json.loads((out / "metrics.json").read_text())

    pred = tmp_path / "pred.csv"
    code, stdout, err = run(["predict", "--model", str(out), "--input", str(train), "--text-col", "text",
                             "--output", str(pred)], capsys)
    assert code in (0, None), err
    df = pd.read_csv(pred)
    assert list(df.columns[:3]) == ["text", "label", "topics"]
    assert {"p_negative", "p_neutral", "p_positive"} <= set(df.columns)
    assert len(df) == len(tiny_sentiment)
    assert (df[["p_negative", "p_neutral", "p_positive"]].sum(1) - 1).abs().max() < 1e-4

    code, stdout, _ = run(["eval", "--model", str(out), "--input", str(train)], capsys)
    assert code in (0, None) and "macro_f1" in stdout


def test_finetune_ema_decay_reaches_the_training_loop(tmp_path, capsys, tiny_sentiment):
    data = tmp_path / "train.csv"
    tiny_sentiment.to_csv(data, index=False)
    out = tmp_path / "ema"
    code, _, err = run(["finetune", "--train", str(data), "--dev", str(data), "--out", str(out), "--max-steps", "2",
                        "--eval-every", "1", "--batch-size", "8", "--max-length", "32", "--ema-decay", "0.9"], capsys)
    assert code in (0, None), err
    assert json.loads((out / "training_config.json").read_text())["ema_decay"] == 0.9
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert len(history) == 2 and all("dev_macro_f1_raw" in h for h in history)


@pytest.mark.parametrize("content,expected", [
    (b"", "is empty"),
    (b"text,label\n", "no rows"),
    (b"body,label\nhello,positive\n", "no column 'text'"),
    (b"text,label\n\xff\xfe bad,positive\n", "not UTF-8"),
])
def test_bad_input_files_give_one_line_and_exit_3(tmp_path, capsys, content, expected):
    f = tmp_path / "bad.csv"
    f.write_bytes(content)
    code, _, err = run(["finetune", "--train", str(f), "--dev", str(f), "--out", str(tmp_path / "o")], capsys)
    assert code == 3
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1


def test_predict_with_corrupt_artifact_and_unknown_label(tmp_path, capsys, tiny_classifier, tiny_sentiment):
    data = tmp_path / "x.csv"
    pd.DataFrame({"text": ["fine"], "label": ["bullish"]}).to_csv(data, index=False)
    code, _, err = run(["eval", "--model", str(tiny_classifier.artifact_dir), "--input", str(data)], capsys)
    assert code == 3 and "unknown label 'bullish'" in err
    code, _, err = run(["predict", "--model", str(tmp_path), "--input", str(data), "--output", str(tmp_path / "o.csv")], capsys)
    assert code == 3 and "no config.json" in err
    empty = tmp_path / "empty_text.csv"
    pd.DataFrame({"text": ["ok", "   "]}).to_csv(empty, index=False)
    code, _, err = run(["predict", "--model", str(tiny_classifier.artifact_dir), "--input", str(empty),
                        "--output", str(tmp_path / "o.csv")], capsys)
    assert code == 3 and "empty" in err
    assert not (tmp_path / "o.csv").exists()


def test_embed_and_index_build_search(tmp_path, capsys, tiny_sentiment):
    import numpy as np

    data = tmp_path / "docs.csv"
    tiny_sentiment.assign(id=[f"d{i}" for i in range(len(tiny_sentiment))]).to_csv(data, index=False)
    code, _, err = run(["embed", "--input", str(data), "--output", str(tmp_path / "v.npy")], capsys)
    assert code in (0, None), err
    v = np.load(tmp_path / "v.npy", allow_pickle=False)
    assert v.shape == (len(tiny_sentiment), 384)
    code, _, err = run(["index", "build", "--input", str(data), "--key-col", "id", "--out", str(tmp_path / "idx")], capsys)
    assert code in (0, None), err
    code, out, err = run(["index", "search", "--index", str(tmp_path / "idx"), "-k", "2", "regulators fined the bank"], capsys)
    assert code in (0, None), err
    assert out.splitlines()[0].split("\t")[1] == "d16"


def test_hub_id_offline_via_cli_is_one_line(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    f = tmp_path / "t.csv"
    f.write_text("text,label\na,x\nb,y\n")
    p = subprocess.run([sys.executable, "-m", "verticore.cli", "finetune", "--train", str(f), "--dev", str(f),
                        "--out", str(tmp_path / "o"), "--base", "ProsusAI/finbert"],
                       capture_output=True, text=True, env={**env, "PYTHONPATH": ":".join(sys.path)})
    assert p.returncode == 3
    assert p.stderr.startswith("error: model 'ProsusAI/finbert' is not in the local cache")
    assert "Traceback" not in p.stderr
