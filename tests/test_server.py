"""FastAPI serving: /classify, /embed, /health, OpenAPI, and 4xx on bad requests."""
import pytest
from fastapi.testclient import TestClient

from verticore.server import create_app


@pytest.fixture(scope="module")
def client(tiny_classifier):
    return TestClient(create_app(str(tiny_classifier.artifact_dir), "default", device="cpu", max_texts=8, max_chars=2000))


def test_health_and_docs(client):
    r = client.get("/health?warm=1")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert "/classify" in client.get("/openapi.json").json()["paths"]


def test_classify_single_and_batch(client):
    r = client.post("/classify", json={"text": "Profit rose sharply."})
    assert r.status_code == 200
    assert r.json()["prediction"]["label"] in {"negative", "neutral", "positive"}
    r = client.post("/classify", json={"texts": ["a good year", "a bad year"], "top_k": 2})
    assert len(r.json()["predictions"]) == 2 and len(r.json()["predictions"][0]["top_k"]) == 2


def test_embed(client):
    r = client.post("/embed", json={"texts": ["hello", "world"]})
    assert r.status_code == 200 and r.json()["dimension"] == 384 and len(r.json()["embeddings"]) == 2


@pytest.mark.parametrize("body,status,needle", [
    ({}, 422, "needs 'text' or 'texts'"),
    ({"texts": []}, 422, "empty"),
    ({"text": "   "}, 422, "empty"),
    ({"texts": "not a list"}, 422, "invalid request"),
    ({"texts": ["x"] * 9}, 413, "too many texts"),
    ({"text": "x" * 2001}, 413, "limit"),
])
def test_bad_requests_get_4xx_with_clear_body(client, body, status, needle):
    r = client.post("/classify", json=body)
    assert r.status_code == status and needle in r.json()["detail"]


def test_huge_body_rejected_and_server_survives(client):
    r = client.post("/embed", content=b"{" + b" " * 5_000_000 + b"}", headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.get("/health").status_code == 200


def test_no_classifier_configured():
    c = TestClient(create_app(None, "default"))
    r = c.post("/classify", json={"text": "x"})
    assert r.status_code == 404 and "no classifier" in r.json()["detail"]
