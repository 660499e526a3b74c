"""Fault bench: run the real CLIs and writers as subprocesses, SIGKILL them at random (seeded)
points, restart, and count what was lost, duplicated or left unloadable.

Parts (all on loopback / local files):

* ``webhooks``: N alerts in a monitor's outbox; the delivering process (``finance-sentiment
  deliver --loop``) is killed >= 10 times while the receiver (``finance-sentiment receiver``, a
  separate process with a SQLite dedupe store) is down, then slow (5 s per request), then
  flapping, then healthy. Counts alerts that reached the receiver, duplicate sends (at-least-once
  transport) and idempotency keys per alert (must be 1: the receiver turns duplicates into
  exactly-once effects).
* ``ingest``: a folder of JSONL records ingested by ``finance-sentiment ingest`` killed >= 10
  times mid-run (and the files appended to between runs); every record stored exactly once.
* ``recommender_save``: a loop of ``Catalog.upsert`` + ``Catalog.save`` killed >= 10 times; after
  each kill the catalog must load in a fresh state and equal one of the generations the writer
  started to save (never a mix), with vectors that agree with the texts.
* ``kb_ingest``: the same for the customer-service knowledge base (document re-ingest loop).

Writes ``bench/results/faults.json`` (``--output`` to write elsewhere; ``--small`` is the quick
version the test suite runs).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Callable


def _bench_common():
    # Loaded by path under its own name: another module called ``common`` may already be imported
    # (the test suite imports apps' dashboard modules), and bench/recommender.py would shadow the
    # recommender app if bench/ were put on sys.path.
    import importlib.util

    spec = importlib.util.spec_from_file_location("verticore_bench_common", Path(__file__).resolve().parent / "common.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_common = _bench_common()
ROOT, print_table, write_result = _common.ROOT, _common.print_table, _common.write_result
sys.path[:] = [str(ROOT / "shared"), str(ROOT / "apps")] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

PY = sys.executable
BIN = Path(PY).parent


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": "1", "VERTICORE_DEMO_FAST": "1"})
    env.update(extra)
    return env


def _cli(name: str) -> list[str]:
    exe = BIN / name
    return [str(exe)] if exe.exists() else [PY, "-m", f"{name.replace('-', '_')}.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _wait_line(proc: subprocess.Popen, prefix: str, timeout: float, sink: list[str] | None = None) -> str | None:
    """Read the child's stdout until a line starting with ``prefix`` (or EOF / timeout)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            return None
        line = line.strip()
        if sink is not None:
            sink.append(line)
        if line.startswith(prefix):
            return line
    return None


def _kill_during_save(proc: subprocess.Popen, rng: random.Random, lines: list[str]) -> None:
    """SIGKILL at a random point of a random save: after the n-th "saving" line, 0-60 ms later
    (a save takes a few to tens of ms, so kills land before, inside and just after the writes)."""
    for _ in range(rng.randint(1, 25)):
        if _wait_line(proc, "saving", 30, lines) is None:
            break
    time.sleep(rng.uniform(0.0, 0.06))
    _kill(proc)


def _tail(path: Path, n: int = 300) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    return " ".join(text.splitlines()[-2:])[-n:]


# ---------------------------------------------------------------------------------------------
# recommender catalog: upsert + save loop
# ---------------------------------------------------------------------------------------------
CATALOG_WRITER = textwrap.dedent("""
    import hashlib, json, random, sys
    from pathlib import Path
    from recommender.catalog import Catalog
    from verticore import Embedder
    d, seed = Path(sys.argv[1]), int(sys.argv[2])
    emb = Embedder("default", device="cpu"); emb.warm_up()
    rng = random.Random(seed)
    if (d / "READY").exists():
        cat = Catalog.load(d, embedder=emb)
    else:
        cat = Catalog.from_records([{"item_id": f"i{j}", "title": f"item {j} first text"} for j in range(20)], embedder=emb)
        cat.save(d); (d / "READY").write_text("1")
    def state(c):
        return hashlib.sha256(json.dumps(sorted((i, c.text(i)) for i in c.ids), ensure_ascii=False).encode()).hexdigest()[:16]
    print("saved", state(cat), flush=True)  # the generation this run starts from
    print("ready", flush=True)
    g = 0
    while True:
        g += 1
        recs = [{"item_id": f"i{rng.randrange(40)}", "title": f"item text {rng.random():.6f} gen {g} seed {seed}"} for _ in range(4)]
        cat.upsert(recs)
        if g % 3 == 0:
            cat.remove([i for i in list(cat.ids)[:1]], missing_ok=True)
        print("saving", state(cat), flush=True)
        cat.save(d)
        print("saved", state(cat), flush=True)
""")


def _catalog_state(cat: Any) -> str:
    return hashlib.sha256(json.dumps(sorted((i, cat.text(i)) for i in cat.ids), ensure_ascii=False).encode()).hexdigest()[:16]


def run_recommender_save(work: Path, kills: int, rng: random.Random) -> dict[str, Any]:
    import numpy as np

    from recommender.catalog import Catalog
    from verticore import Embedder

    emb = Embedder("default", device="cpu")
    emb.warm_up()
    d = work / "catalog"
    d.mkdir(parents=True, exist_ok=True)
    attempted: set[str] = set()
    loads_ok, failures, done = 0, [], 0
    while done < kills:
        lines: list[str] = []
        err = work / "writer.err"
        with open(err, "w") as errf:
            proc = subprocess.Popen([PY, "-c", CATALOG_WRITER, str(d), str(rng.randrange(1 << 30))], stdout=subprocess.PIPE,
                                    stderr=errf, text=True, env=_env(), cwd=ROOT)
        if _wait_line(proc, "ready", 120, lines) is None:  # the writer could not open the saved catalog
            _kill(proc)
            failures.append("writer could not load: " + _tail(err))
            done += 1
            continue
        _kill_during_save(proc, rng, lines)
        rest = proc.stdout.read() if proc.stdout else ""
        lines += [x.strip() for x in rest.splitlines()]
        attempted.update(x.split()[1] for x in lines if x.startswith(("saving", "saved")))
        done += 1
        if not (d / "READY").exists():
            continue
        try:
            cat = Catalog.load(d, embedder=emb)
            st = _catalog_state(cat)
            ids = list(cat.ids)
            stored = cat.vectors(ids)
            fresh = emb.encode([cat.text(i) for i in ids])
            agree = float(np.min(np.sum(stored * fresh, axis=1))) > 0.999
            if (st in attempted or not attempted) and agree:
                loads_ok += 1
            else:
                failures.append(f"kill {done}: state {st} {'unknown' if st not in attempted else ''} vectors agree={agree}")
        except Exception as exc:  # noqa: BLE001 - a failed load is what we count
            failures.append(f"kill {done}: load failed: {type(exc).__name__}: {exc}")
    return {"kills": done, "loads_ok": loads_ok, "generations_seen": len(attempted), "failures": failures[:5]}


# ---------------------------------------------------------------------------------------------
# customer-service knowledge base: document re-ingest loop
# ---------------------------------------------------------------------------------------------
KB_WRITER = textwrap.dedent("""
    import random, sys
    from pathlib import Path
    from customer_service.kb import KnowledgeBase
    from verticore import Embedder
    d, docs, seed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    emb = Embedder("default", device="cpu"); emb.warm_up()
    kb = KnowledgeBase(d, embedder=emb)
    kb.index  # open (and repair) the dense index
    rng = random.Random(seed)
    print("ready", flush=True)
    g = 0
    while True:
        g += 1
        n = rng.randrange(4)
        text = f"# Topic {n}\\n\\n" + " ".join(f"Policy {n} paragraph {rng.random():.6f} gen {g}." for _ in range(rng.randint(3, 40)))
        f = docs / f"doc{n}.md"
        f.write_text(text, encoding="utf-8")
        print("saving", f"doc{n}.md", flush=True)
        kb.ingest(f, doc_id=f"doc{n}.md")
        print("saved", f"doc{n}.md", flush=True)
""")


def run_kb_ingest(work: Path, kills: int, rng: random.Random) -> dict[str, Any]:
    from customer_service.kb import KnowledgeBase
    from verticore import Embedder

    emb = Embedder("default", device="cpu")
    emb.warm_up()
    d, docs = work / "kb", work / "kb_docs"
    docs.mkdir(parents=True, exist_ok=True)
    loads_ok, failures, done = 0, [], 0
    while done < kills:
        lines: list[str] = []
        err = work / "writer.err"
        with open(err, "w") as errf:
            proc = subprocess.Popen([PY, "-c", KB_WRITER, str(d), str(docs), str(rng.randrange(1 << 30))],
                                    stdout=subprocess.PIPE, stderr=errf, text=True, env=_env(), cwd=ROOT)
        if _wait_line(proc, "ready", 120, lines) is None:
            _kill(proc)
            failures.append("writer could not open the KB: " + _tail(err))
            done += 1
            continue
        _kill_during_save(proc, rng, lines)
        done += 1
        try:
            kb = KnowledgeBase(d, embedder=emb)
            try:
                index = kb.index  # loads and repairs the dense index from SQLite
                chunk_ids = {r[0] for r in kb.conn.execute("SELECT chunk_id FROM chunks")}
                consistent = set(index.keys()) == chunk_ids
                hits = kb.search("policy paragraph", k=3) if chunk_ids else []
                if consistent and (hits or not chunk_ids):
                    loads_ok += 1
                else:
                    failures.append(f"kill {done}: index keys disagree with chunks")
            finally:
                kb.close()
        except Exception as exc:  # noqa: BLE001
            failures.append(f"kill {done}: load failed: {type(exc).__name__}: {exc}")
    return {"kills": done, "loads_ok": loads_ok, "failures": failures[:5]}


# ---------------------------------------------------------------------------------------------
# finance: folder ingest
# ---------------------------------------------------------------------------------------------
def _prepare_monitor_home(work: Path, prepared: Path | None = None) -> Path:
    """A fresh monitor home with the demo's tiny models (fast mode) and none of its demo stream.

    ``prepared``: an existing monitor folder (``$VERTICORE_HOME/finance_sentiment``) whose models
    to reuse instead of training the tiny demo models here (~1.5 min on 2 cores).
    """
    import shutil

    home = work / "monitor"
    if not (home / "models").exists():
        src = prepared
        if src is None:
            subprocess.run(_cli("finance-sentiment") + ["demo", "--home", str(work / "vhome")], check=True, env=_env(),
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            src = work / "vhome" / "finance_sentiment"
        home.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src / "models", home / "models")
        for name in ("watchlist.csv", "config.yaml"):
            if (src / name).exists():
                shutil.copyfile(src / name, home / name)
    return home


def _records(n: int, start: int, t0: float) -> list[dict[str, Any]]:
    verbs = ["raises", "cuts", "keeps", "reports", "announces", "delays", "expands", "sells"]
    things = ["guidance", "dividend", "outlook", "buyback", "plant", "unit", "forecast", "stake"]
    return [{"id": f"rec-{i}", "title": f"Company {i} {verbs[i % 8]} {things[(i // 8) % 8]} number {i}",
             "published_at": t0 + i, "source": "faults"} for i in range(start, start + n)]


def run_ingest(work: Path, kills: int, n_records: int, rng: random.Random, prepared: Path | None = None,
               kill_window: tuple[float, float] = (4.0, 20.0)) -> dict[str, Any]:
    home = _prepare_monitor_home(work, prepared)
    feed = work / "feed"
    feed.mkdir(parents=True, exist_ok=True)
    t0 = time.time() - 3600
    all_records = _records(n_records, 0, t0)
    # Files are appended to between runs, as a live feed would be.
    chunks = [all_records[i::4] for i in range(4)]
    written = [0, 0, 0, 0]

    def append_some(share: float = 0.3) -> None:
        for f in range(4):
            take = rng.randint(0, max(1, int(len(chunks[f]) * share)))
            part = chunks[f][written[f]: written[f] + take]
            if part:
                with open(feed / f"feed{f}.jsonl", "a", encoding="utf-8") as fh:
                    fh.write("".join(json.dumps(r) + "\n" for r in part))
                written[f] += len(part)

    cmd = _cli("finance-sentiment") + ["ingest", str(feed), "--home", str(home), "--batch-size", "16"]
    done, runs = 0, 0
    append_some(0.3)  # part of the feed is there from the start; the rest arrives between runs
    while done < kills and runs < 6 * kills:
        append_some(0.07)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env(), cwd=ROOT)
        runs += 1
        if rng.random() < 0.2:  # during start-up (model load), before anything is stored
            time.sleep(rng.uniform(*kill_window))
        else:  # inside the batch loop: after 1-3 committed batches, 0-0.5 s into the next one
            for _ in range(rng.randint(1, 3)):
                if _wait_line(proc, "", 120) is None:
                    break
            time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is None:
            _kill(proc)
            done += 1
        else:
            proc.wait()
    # finish: write everything, then run to completion (twice: the second run must add nothing)
    for f in range(4):
        part = chunks[f][written[f]:]
        if part:
            with open(feed / f"feed{f}.jsonl", "a", encoding="utf-8") as fh:
                fh.write("".join(json.dumps(r) + "\n" for r in part))
    for _ in range(2):
        subprocess.run(cmd, check=True, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import re

    conn = sqlite3.connect(home / "monitor.db")
    rows = conn.execute("SELECT item_id FROM items WHERE item_id LIKE '%rec-%'").fetchall()
    conn.close()
    ids = [m.group(0) for (i,) in rows if (m := re.search(r"rec-\d+", i))]
    unique = set(ids)
    wanted = {r["id"] for r in all_records}
    return {"kills": done, "runs": runs + 2, "records": n_records, "stored": len(ids),
            "lost": len(wanted - unique), "stored_twice": len(ids) - len(unique)}


# ---------------------------------------------------------------------------------------------
# finance: webhook delivery under a failing receiver
# ---------------------------------------------------------------------------------------------
class _Receiver:
    """``finance-sentiment receiver`` as a separate process with its own SQLite dedupe store."""

    def __init__(self, port: int, db: Path, log: Path) -> None:
        self.port, self.db, self.log = port, db, log
        self.proc: subprocess.Popen | None = None

    def up(self, mode: str = "ok", slow_s: float = 5.0) -> None:
        self.down()
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(_cli("finance-sentiment") + [
                "receiver", "--port", str(self.port), "--db", str(self.db), "--mode", mode, "--slow-s", str(slow_s),
                "--quiet"], stdout=log, stderr=log, env=_env(), cwd=ROOT)
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until it accepts connections
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"receiver did not start (see {self.log})")

    def down(self) -> None:
        if self.proc is not None:
            _kill(self.proc)  # SIGKILL: it may die between processing a request and answering it
            self.proc = None


def run_webhooks(work: Path, kills: int, n_alerts: int, rng: random.Random, slow_s: float = 5.0) -> dict[str, Any]:
    """Kill the deliverer >= ``kills`` times while the receiver is down, slow, flapping; then let it finish."""
    work.mkdir(parents=True, exist_ok=True)
    home, rx_db, port = work / "monitor", work / "receiver.db", _free_port()
    home.mkdir(exist_ok=True)
    cfg = work / "webhooks.yaml"
    lease_s = slow_s * 2 + 4
    # timeout above the slow receiver's delay (so slow deliveries succeed), lease above the timeout
    cfg.write_text(
        "webhooks:\n"
        f"  - {{name: bench, url: 'http://127.0.0.1:{port}/hook', format: json, timeout_s: {slow_s + 3},"
        " max_attempts: 100000, backoff_base_s: 0.2, backoff_max_s: 2}\n", encoding="utf-8")
    env = _env(VERTICORE_WEBHOOK_ALLOW="127.0.0.1")
    prefix = f"faults{rng.randrange(1 << 20)}"
    waves = [0]

    def queue(n: int) -> None:  # new alerts in waves, so every phase has deliveries in flight to kill
        waves[0] += 1
        subprocess.run(_cli("finance-sentiment") + ["queue-test-alerts", "--home", str(home), "--config", str(cfg),
                                                    "-n", str(n), "--prefix", f"{prefix}w{waves[0]}"],
                       check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)

    def pending() -> int:
        if not (home / "monitor.db").exists():
            return 0
        conn = sqlite3.connect(home / "monitor.db")
        try:
            return int(conn.execute("SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'sending')").fetchone()[0])
        except sqlite3.OperationalError:  # not created yet
            return 0
        finally:
            conn.close()

    wave_size = max(2, n_alerts // 3)
    queue(n_alerts)
    receiver = _Receiver(port, rx_db, work / "receiver.log")
    deliver = _cli("finance-sentiment") + ["deliver", "--home", str(home), "--config", str(cfg), "--until-empty",
                                           "--lease-s", str(lease_s)]
    # phases: receiver down, then slow, then flapping; the deliverer is SIGKILLed in each
    per_phase = [max(1, kills // 3), max(1, kills // 3)]
    per_phase.append(max(1, kills - sum(per_phase)))
    done = 0
    phase_log = []
    for phase, n in zip(("down", "slow", "flapping"), per_phase):
        if phase == "slow":
            receiver.up("slow", slow_s)
        phase_kills = 0
        for _ in range(8 * n):
            if phase_kills >= n:
                break
            if pending() == 0:
                queue(wave_size)
            with open(work / "deliver.log", "a") as log:
                proc = subprocess.Popen(deliver, stdout=log, stderr=log, env=env, cwd=ROOT)
            window = {"down": (1.0, 3.0), "slow": (2.0, 2.5 * slow_s), "flapping": (0.5, 3.0)}[phase]
            t_end = time.time() + rng.uniform(*window)
            while time.time() < t_end and proc.poll() is None:
                if phase == "flapping":
                    if receiver.proc is None:
                        receiver.up("ok")
                    else:
                        receiver.down()
                    time.sleep(rng.uniform(0.2, 1.2))
                else:
                    time.sleep(0.1)
            if proc.poll() is None:
                _kill(proc)
                done += 1
                phase_kills += 1
        phase_log.append(phase)
    receiver.up("ok")
    finished = subprocess.run(deliver + ["--max-seconds", str(lease_s * 3 + 60)], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    receiver.down()
    rx = sqlite3.connect(rx_db)
    try:
        per_alert = dict(rx.execute("SELECT alert_key, COUNT(DISTINCT idempotency_key) FROM accepted "
                                    "WHERE alert_key LIKE ? GROUP BY alert_key", (f"{prefix}w%",)).fetchall())
        duplicate_sends = int(rx.execute("SELECT COALESCE(SUM(duplicates), 0) FROM accepted").fetchone()[0])
        requests = int(rx.execute("SELECT COUNT(*) FROM requests").fetchone()[0])
    finally:
        rx.close()
    mon = sqlite3.connect(home / "monitor.db")
    try:
        alerts = int(mon.execute("SELECT COUNT(*) FROM alerts WHERE alert_key LIKE ?", (f"{prefix}w%",)).fetchone()[0])
        states = dict(mon.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall())
    finally:
        mon.close()
    return {"kills": done, "alerts": alerts, "delivered_unique": len(per_alert), "lost": alerts - len(per_alert),
            "duplicate_sends": duplicate_sends, "keys_per_alert_max": max(per_alert.values(), default=0),
            "receiver_requests": requests, "outbox_states": states, "finished": finished, "slow_s": slow_s,
            "lease_s": lease_s, "phases": phase_log}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kills", type=int, default=10, help="kills per part (>= 10 for the full bench)")
    ap.add_argument("--records", type=int, default=1000, help="records in the folder-ingest part")
    ap.add_argument("--alerts", type=int, default=24, help="alerts queued at the start of the webhook part (waves of a "
                                                          "third as many follow whenever the outbox drains before "
                                                          "all kills are done)")
    ap.add_argument("--slow-s", type=float, default=5.0, help="seconds the slow receiver takes per request")
    ap.add_argument("--parts", default="webhooks,ingest,recommender_save,kb_ingest")
    ap.add_argument("--small", action="store_true", help="the quick version for the test suite")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--monitor-models", type=Path, default=None,
                    help="reuse a prepared monitor folder's models (default: train the tiny demo models)")
    ap.add_argument("--output", type=Path, default=None, help="JSON path (default bench/results/faults.json)")
    args = ap.parse_args(argv)
    if args.small:
        args.kills, args.records, args.alerts, args.slow_s = 3, 120, 6, 1.5
    rng = random.Random(args.seed)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="faults-"))
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "webhooks": lambda: run_webhooks(work / "wh", args.kills, args.alerts, rng, args.slow_s),
        "ingest": lambda: run_ingest(work / "ing", args.kills, args.records, rng, args.monitor_models,
                                     (0.5, 4.0)),
        "recommender_save": lambda: run_recommender_save(work / "rec", args.kills, rng),
        "kb_ingest": lambda: run_kb_ingest(work / "kb", args.kills, rng),
    }
    t = time.time()
    result: dict[str, Any] = {}
    for name in parts:
        t_part = time.time()
        result[name] = runners[name]()
        result[name]["seconds"] = round(time.time() - t_part, 1)
        print(f"{name}: {result[name]}", flush=True)
    result["seed"] = args.seed
    result["seconds"] = round(time.time() - t, 1)
    rows = [[k, v.get("kills"), ", ".join(f"{a}={b}" for a, b in v.items() if a not in {"kills", "failures", "seconds"})]
            for k, v in result.items() if isinstance(v, dict)]
    print_table(["part", "kills", "counts"], rows)
    if args.output:
        from verticore.io import atomic_write_json

        atomic_write_json(args.output, result)
    else:
        write_result("faults", result)
    return result


if __name__ == "__main__":
    main()
