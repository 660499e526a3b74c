"""Serving bench: `verticore serve` as real subprocesses on 127.0.0.1, driven by a bounded async load generator.

Three servers, same run, same models:
  A  auth on,  micro-batching on   (the default `verticore serve`; also mounts the installed apps)
  B  auth on,  --no-batching       (one model call per request: the batching baseline)
  C  --insecure-no-auth, batching  (the auth + metering overhead baseline)

Measures /v1/embed and /v1/classify at concurrency 32 with single-sentence requests (batched vs
unbatched), auth overhead (A vs C on /v1/embed, alternated), POST /v1/support/sessions/{id}/messages
when the customer_service app is mounted, 5xx count, and server A's RSS over the run.
Writes bench/results/serving.json. Loopback only; every phase is bounded in requests and seconds.

    .venv/bin/python bench/serving.py [--model DIR] [--quick]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx  # noqa: E402
from common import ARTIFACTS, ROOT, print_table, write_result  # noqa: E402

CONCURRENCY = 32
SENTENCES = [line.split(",")[0].strip('"') for line in (ROOT / "tests" / "data" / "tiny_sentiment.csv")
             .read_text(encoding="utf-8").splitlines()[1:] if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tiny_classifier(model: str | None) -> str:
    """The given artifact, or a tiny one trained once (6 steps on 30 invented sentences, ~20 s)."""
    if model:
        return model
    out = ARTIFACTS / "serving_tiny_clf"
    if (out / "labels.json").exists():
        return str(out)
    import pandas as pd

    from verticore.finetune import ClassifierTrainingConfig, train_classifier

    df = pd.read_csv(ROOT / "tests" / "data" / "tiny_sentiment.csv")
    cfg = ClassifierTrainingConfig(epochs=1, batch_size=8, max_steps=6, eval_every=3, learning_rate=1e-4,
                                   max_length=64, device="cpu")
    train_classifier(df.text.tolist(), df.label.tolist(), df.text.tolist()[::3], df.label.tolist()[::3], out, cfg,
                     show_progress=False)
    return str(out)


class Server:
    def __init__(self, name: str, args: list[str], workdir: Path) -> None:
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / f"server_{name}.log", "w")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen([sys.executable, "-m", "verticore.cli", "serve", "--host", "127.0.0.1",
                                      "--port", str(self.port), "--device", "cpu", "--keys-db", str(workdir / "keys.db"),
                                      "--usage-db", str(workdir / f"usage_{name}.db"), *args],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def wait_ready(self, timeout: float = 180) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server {self.name} exited ({self.proc.returncode}); see {self.log.name}")
            try:
                r = httpx.get(self.url + "/health", timeout=2)
                if r.status_code == 200:
                    return r.json()
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server {self.name} not ready after {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: graceful shutdown (drain batches, flush usage)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


async def _drive(posters, path_for, payload_for, n: int, max_s: float) -> dict:
    """Run one worker per ``poster`` (``await poster(path, payload) -> status``) until ``n`` requests or
    ``max_s`` seconds; latency percentiles, throughput and status counts."""
    lat: list[float] = []
    statuses: dict[int, int] = {}
    sent = 0
    deadline = time.perf_counter() + max_s

    async def worker(post) -> None:
        nonlocal sent
        while sent < n and time.perf_counter() < deadline:
            i = sent
            sent += 1
            t0 = time.perf_counter()
            code = await post(path_for(i), payload_for(i))
            lat.append((time.perf_counter() - t0) * 1000)
            statuses[code] = statuses.get(code, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(p) for p in posters))
    wall = time.perf_counter() - t0
    lat.sort()
    q = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None  # noqa: E731
    return {"requests": len(lat), "rps": round(len(lat) / wall, 1), "p50_ms": q(0.50), "p95_ms": q(0.95),
            "p99_ms": q(0.99), "statuses": statuses}


def _httpx_poster(client: httpx.AsyncClient):
    async def post(path: str, payload: dict) -> int:
        try:
            return (await client.post(path, json=payload)).status_code
        except httpx.HTTPError:
            return 599
    return post


def _raw_poster(conn: "RawHTTPConnection"):
    async def post(path: str, payload: dict) -> int:
        try:
            return await conn.post(path, payload)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            await conn.close()
            return 599
    return post


async def load(url: str, path: str, headers: dict, n: int, max_s: float, concurrency: int = CONCURRENCY,
               body=None, path_for=None) -> dict:
    """``n`` POSTs (at most ``max_s`` seconds) from ``concurrency`` workers; one sentence each unless ``body``."""
    payload_for = body or (lambda i: {"text": SENTENCES[i % len(SENTENCES)]})
    path_for = path_for or (lambda i: path)
    if CLIENT == "raw":  # one keep-alive connection per worker
        host, port = url.split("//")[1].split(":")
        conns = [RawHTTPConnection(host, int(port), headers) for _ in range(concurrency)]
        try:
            return await _drive([_raw_poster(c) for c in conns], path_for, payload_for, n, max_s)
        finally:
            for c in conns:
                await c.close()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as client:
        return await _drive([_httpx_poster(client)] * concurrency, path_for, payload_for, n, max_s)


class RawHTTPConnection:
    """A minimal HTTP/1.1 keep-alive client over asyncio streams (POST with a JSON body).

    The load generator shares the server's two cores, so its own cost per request is part of
    what the bench measures; this client spends a fraction of httpx's CPU per request, which
    leaves the cores to the server (``--client httpx`` uses httpx instead).
    """

    def __init__(self, host: str, port: int, headers: dict) -> None:
        self.host, self.port = host, port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: dict) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        body = json.dumps(payload).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n{self.extra}\r\n").encode()
        self.writer.write(head + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and value.lower() == "close":
                close = True
        if chunked:
            while True:
                size = int((await self.reader.readline()).strip() or b"0", 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await self.reader.readexactly(length)
        if close:
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


CLIENT = "raw"


def run(coro):
    return asyncio.run(coro)


def served(url: str) -> int:
    """Requests a server has answered, from its /metrics."""
    lines = httpx.get(url + "/metrics").text.splitlines()
    return int(sum(float(x.rsplit(" ", 1)[1]) for x in lines if x.startswith("verticore_http_requests_total{")))


def prepare_support_home(work: Path) -> Path:
    """A VERTICORE_HOME with the customer-service demo bot (fast mode: sample KB, tiny intent model)."""
    home = work / "home"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "VERTICORE_DEMO_FAST": "1"}
    exe = Path(sys.executable).parent / "customer-service"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "customer_service.cli"]
    subprocess.run([*cmd, "demo", "--home", str(home)], check=True, env=env, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return home


def find_support(openapi: dict) -> tuple[str | None, str | None]:
    paths = openapi.get("paths", {})
    create = next((p for p in paths if p.rstrip("/") == "/v1/support/sessions" and "post" in paths[p]), None)
    msgs = next((p for p in paths if p.startswith("/v1/support/sessions/{") and p.endswith("/messages")
                 and "post" in paths[p]), None)
    return create, msgs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="classifier artifact for /v1/classify (default: a tiny one trained here)")
    ap.add_argument("--quick", action="store_true", help="a few hundred requests per phase (smoke run)")
    ap.add_argument("--client", choices=["raw", "httpx"], default="raw",
                    help="load generator: raw asyncio HTTP/1.1 keep-alive (light) or httpx.AsyncClient")
    args = ap.parse_args()
    global CLIENT
    CLIENT = args.client
    scale = 0.1 if args.quick else 1.0
    model = tiny_classifier(args.model)
    work = Path(tempfile.mkdtemp(prefix="vc_serving_bench_"))
    from verticore.serving import KeyStore

    key, _ = KeyStore(work / "keys.db").create("bench", ["admin"])
    auth = {"Authorization": f"Bearer {key}"}
    common = ["--model", model, "--embedder", "default", "--no-access-log"]
    home = prepare_support_home(work)
    servers = {"A": Server("A", [*common, "--apps", "all", "--home", str(home)], work),
               "B": Server("B", [*common, "--apps", "none", "--no-batching"], work),
               "C": Server("C", [*common, "--apps", "none", "--insecure-no-auth"], work)}
    results: dict = {}
    total = 0
    errors_5xx = 0

    def tally(res: dict) -> dict:
        nonlocal total, errors_5xx
        total += res["requests"]
        errors_5xx += sum(v for k, v in res["statuses"].items() if k >= 500)
        return res

    try:
        health = {k: s.wait_ready() for k, s in servers.items()}
        assert health["A"]["auth"] == "on" and health["C"]["auth"].startswith("DISABLED")
        A, B, C = servers["A"].url, servers["B"].url, servers["C"].url
        for url in (A, B, C):  # warm-up: models, connections, allocator
            for path in ("/v1/embed", "/v1/classify"):
                tally(run(load(url, path, auth, int(300 * scale) + 50, 30)))
        # The customer-service bot loads lazily: create its sessions and warm it up before the memory baseline.
        create, msgs = find_support(httpx.get(A + "/openapi.json").json())
        sessions: list = []
        param = None
        if create and msgs:
            with httpx.Client(base_url=A, headers=auth, timeout=60) as c:
                for _ in range(8):
                    r = c.post(create, json={})
                    if r.status_code < 300:
                        body = r.json()
                        sessions.append(body.get("session_id") or body.get("id"))
            if sessions and all(sessions):
                param = msgs.split("{")[1].split("}")[0]
                tally(run(_support_load(A, msgs, param, sessions, auth, 16, 8)))
        rss_start = rss_mb(servers["A"].proc.pid)

        for ep in ("embed", "classify"):
            batched = tally(run(load(A, f"/v1/{ep}", auth, int(5000 * scale), 25)))
            unbatched = tally(run(load(B, f"/v1/{ep}", auth, int(2000 * scale), 20)))
            results[ep] = {"concurrency": CONCURRENCY, "batched_rps": batched["rps"], "unbatched_rps": unbatched["rps"],
                           "ratio": round(batched["rps"] / unbatched["rps"], 2) if unbatched["rps"] else None,
                           "p50_ms": batched["p50_ms"], "p95_ms": batched["p95_ms"], "p99_ms": batched["p99_ms"]}

        # Auth + metering overhead: alternate A (auth) and C (no auth) to spread out machine noise.
        on_n = off_n = 0
        on_s = off_s = 0.0
        for _ in range(2):
            for url, is_on in ((A, True), (C, False)):
                r = tally(run(load(url, "/v1/embed", auth, int(2500 * scale), 15)))
                if is_on:
                    on_n, on_s = on_n + r["requests"], on_s + r["requests"] / r["rps"]
                else:
                    off_n, off_s = off_n + r["requests"], off_s + r["requests"] / r["rps"]
        auth_ratio = round((on_n / on_s) / (off_n / off_s), 3)

        support = {"concurrency": None, "rps": None, "p95_ms": None}
        if create and msgs:
            if param is not None:
                conc = 8
                res = tally(run(_support_load(A, msgs, param, sessions, auth, int(600 * scale), conc)))
                support = {"concurrency": conc, "rps": res["rps"], "p95_ms": res["p95_ms"]}
                results["_support_statuses"] = res["statuses"]
            else:
                print("customer_service is mounted but creating a session failed; support_message = null")
        else:
            print(f"customer_service router not mounted on server A (apps: {health['A'].get('apps')}); "
                  "support_message = null")
        # Top up server A to >= 20,000 requests in this run for the memory check.
        served_a = served(A)
        if served_a < 20_000 and not args.quick:
            tally(run(load(A, "/v1/embed", auth, 20_000 - served_a, 60)))
        rss_end = rss_mb(servers["A"].proc.pid)
        served_a = served(A)
    finally:
        for s in servers.values():
            s.stop()

    out = {"embed": results["embed"], "classify": results["classify"], "support_message": support,
           "auth_overhead_ratio": auth_ratio, "errors_5xx": errors_5xx, "rss_mb_start": round(rss_start, 1),
           "rss_mb_end": round(rss_end, 1), "requests": total, "client": args.client}
    print_table(["endpoint", "conc", "batched rps", "unbatched rps", "ratio", "p50 ms", "p95 ms", "p99 ms"],
                [[ep, r["concurrency"], r["batched_rps"], r["unbatched_rps"], r["ratio"], r["p50_ms"], r["p95_ms"],
                  r["p99_ms"]] for ep, r in (("embed", out["embed"]), ("classify", out["classify"]))])
    print(f"support_message: {support}")
    print(f"auth_overhead_ratio {auth_ratio}  errors_5xx {errors_5xx}  requests {total} (server A {served_a})  "
          f"RSS A {out['rss_mb_start']} -> {out['rss_mb_end']} MB")
    if not args.quick:
        write_result("serving", out)
    else:
        print(json.dumps(out, indent=2))


async def _support_load(url: str, path: str, param: str, sessions: list, headers: dict, n: int, conc: int) -> dict:
    """Customer messages, round-robin over sessions (one JSON body {"text": ...})."""
    return await load(url, path, headers, n, 600, conc, body=lambda i: {"text": "How long does delivery take?"},
                      path_for=lambda i: path.replace("{" + param + "}", str(sessions[i % len(sessions)])))


if __name__ == "__main__":
    main()
