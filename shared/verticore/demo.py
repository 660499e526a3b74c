"""``python -m verticore.demo`` (what ``make demo`` runs): prepare demo state, then start the hub.

1. Preparation (idempotent; fast when already done): for every installed app (registered under the
   ``verticore.apps`` entry-point group, see :mod:`verticore.plugins`) call its ``prepare_demo(home,
   fast=..., show_progress=...)`` hook; train the core demo classifier on the bundled sample
   ``verticore/samples/core_sentiment.csv`` into ``home/core/demo_classifier``.
2. Start ``streamlit run .../dashboard/hub.py`` headless on 127.0.0.1:8501 (``--port``/``--host`` or
   env ``VERTICORE_PORT``/``VERTICORE_HOST``), print the URL and open a browser when there is a display.
   Ctrl-C stops it.

``--prepare-only`` prepares and exits (tests / CI); ``--no-prepare`` only starts the hub;
``--list`` prints the parts (the apps and ``core``) and whether their demo state is ready.
Env ``VERTICORE_DEMO_FAST=1`` makes every preparation tiny (a couple of training steps).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .dashboard import HUB_SCRIPT, core_demo_classifier
from .errors import VerticoreError
from .paths import HOME_ENV, home
from .plugins import AppSpec, discover_apps
from .settings import get_settings

FAST_ENV = "VERTICORE_DEMO_FAST"
CORE = "core"


def _log(msg: str) -> None:
    print(f"[verticore demo] {msg}", flush=True)


def fast_mode() -> bool:
    """True when ``VERTICORE_DEMO_FAST`` asks for tiny demo training (tests, CI)."""
    return get_settings().demo_fast


@dataclass
class StepResult:
    """Outcome of one preparation step: ``status`` is ready, prepared, skipped or failed."""

    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0][:240]
    return text if isinstance(exc, VerticoreError) else f"{type(exc).__name__}: {text}"


# -- core demo classifier ----------------------------------------------------------------------
def prepare_core(base: Path, show_progress: bool = True) -> StepResult:
    """Train the tiny core demo classifier into ``base/core/demo_classifier`` unless it is there.

    The training is staged (``train_classifier`` swaps the finished artifact in), so an
    interrupted run leaves nothing half-written and the next run trains again.
    """
    out = core_demo_classifier(base)
    if (out / "labels.json").is_file() and (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return StepResult(CORE, "ready", f"demo classifier already at {out}")
    try:
        from .finetune import ClassifierTrainingConfig, train_classifier
    except ImportError as exc:
        return StepResult(CORE, "skipped", f"verticore.finetune is not importable yet ({_first_line(exc)})")
    from .io import read_table
    from .samples import sample_path

    df = read_table(sample_path("core_sentiment.csv"), ["text", "label"])
    is_dev = [i % 5 == 4 for i in range(len(df))]
    train = df[[not d for d in is_dev]]
    dev = df[is_dev]
    if fast_mode():
        config = ClassifierTrainingConfig(epochs=1, batch_size=8, max_steps=2, max_length=32, patience=1, device="auto")
    else:
        config = ClassifierTrainingConfig(epochs=8, batch_size=16, learning_rate=1e-4, max_length=64, patience=3,
                                          device="auto")
    result = train_classifier(train["text"].tolist(), train["label"].tolist(), dev["text"].tolist(),
                              dev["label"].tolist(), out, config=config, show_progress=show_progress)
    acc = result.metrics.get("dev", {}).get("accuracy")
    extra = f", dev accuracy {acc:.2f} on {len(dev)} rows" if isinstance(acc, (int, float)) else ""
    return StepResult(CORE, "prepared", f"demo classifier trained into {result.artifact_dir}{extra}")


# -- apps --------------------------------------------------------------------------------------
def installed_apps() -> dict[str, AppSpec]:
    """The apps registered under ``verticore.apps`` (one that fails to load is logged and left out)."""
    return discover_apps(on_error=lambda name, why: _log(f"app {name} not loaded: {why}  [ERROR]"))


def prepare_app(app: AppSpec | str, base: Path, show_progress: bool = True) -> StepResult:
    """Call the app's ``prepare_demo(base, fast=..., show_progress=...)`` hook; skip apps without one."""
    spec = app if isinstance(app, AppSpec) else installed_apps().get(app)
    if spec is None:
        return StepResult(str(app), "skipped", f"{app} is not an installed app")
    if spec.prepare_demo is None:
        return StepResult(spec.name, "skipped", f"{spec.name} has no demo to prepare")
    if spec.demo_ready is not None and spec.is_demo_ready(base):  # only the app's own check can say "done"
        return StepResult(spec.name, "ready", f"demo state already in {base / spec.name}")
    spec.run_prepare_demo(base, fast=fast_mode(), show_progress=show_progress)
    return StepResult(spec.name, "prepared", f"demo state in {base / spec.name}")


def demo_parts(apps: dict[str, AppSpec] | None = None) -> list[str]:
    """What ``--only`` accepts: every installed app, then ``core``."""
    return [*(installed_apps() if apps is None else apps), CORE]


def prepare_all(base: Path, only: Sequence[str] | None = None, show_progress: bool = True) -> list[StepResult]:
    """Run every preparation step (apps, then core); a failing step is logged and the rest go on."""
    base.mkdir(parents=True, exist_ok=True)
    apps = installed_apps()
    names = demo_parts(apps)
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise VerticoreError(f"unknown demo part(s) {unknown}; choose from {names}")
        names = [n for n in names if n in set(only)]
    results: list[StepResult] = []
    for name in names:
        _log(f"preparing {name} …")
        t0 = time.perf_counter()
        try:
            res = prepare_core(base, show_progress) if name == CORE else prepare_app(apps[name], base, show_progress)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one broken app must not stop the others or the hub
            res = StepResult(name, "failed", _first_line(exc))
        res.seconds = time.perf_counter() - t0
        level = {"failed": "ERROR", "skipped": "WARNING"}.get(res.status, "ok")
        _log(f"{name}: {res.status} ({res.seconds:.1f} s) {res.detail}" + ("" if level == "ok" else f"  [{level}]"))
        results.append(res)
    return results


def list_parts(base: Path) -> list[dict[str, object]]:
    """Every demo part with its title and whether its demo state is ready under ``base``."""
    rows: list[dict[str, object]] = []
    for name, spec in installed_apps().items():
        rows.append({"name": name, "title": spec.title, "has_demo": spec.prepare_demo is not None,
                     "ready": spec.is_demo_ready(base)})
    clf = core_demo_classifier(base)
    rows.append({"name": CORE, "title": "Core demo classifier", "has_demo": True,
                 "ready": (clf / "labels.json").is_file()})
    return rows


# -- hub ---------------------------------------------------------------------------------------
def _child_env(base: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env[HOME_ENV] = str(base)
    return env


def hub_command(host: str, port: int) -> list[str]:
    """The ``streamlit run`` command line that serves the hub."""
    return [sys.executable, "-m", "streamlit", "run", str(HUB_SCRIPT), "--server.headless", "true",
            "--server.port", str(port), "--server.address", host, "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "minimal"]


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 90.0) -> bool:
    """Poll Streamlit's ``/_stcore/health`` until it answers ok (False on timeout or early exit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    return False


def _can_open_browser() -> bool:
    # Without a display, webbrowser may start a console browser that takes over the terminal.
    if sys.platform in {"darwin", "win32"}:
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def port_free(host: str, port: int) -> bool:
    """True when ``host:port`` can be bound right now."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def serve(base: Path, host: str, port: int, open_browser: bool = True) -> int:
    """Run the hub until Ctrl-C (or until streamlit exits); returns the exit code."""
    if not port_free(host, port):
        print(f"error: port {port} on {host} is already in use; pass --port N (or set VERTICORE_PORT)",
              file=sys.stderr)
        return 2
    cmd = hub_command(host, port)
    shown = "127.0.0.1" if host in {"0.0.0.0", "::", ""} else (f"[{host}]" if ":" in host else host)
    url = f"http://{shown}:{port}"
    _log(f"starting the hub: {' '.join(cmd[1:])}")
    proc = subprocess.Popen(cmd, env=_child_env(base))
    try:
        if wait_healthy(url, proc):
            print(f"\n  Verticore hub running at  {url}\n  (Ctrl-C to stop)\n", flush=True)
            if open_browser and _can_open_browser():
                try:
                    import webbrowser

                    webbrowser.open(url)
                except Exception:
                    pass
        elif proc.poll() is None:
            _log(f"the hub did not answer on {url} yet; it may still be starting")
        else:
            _log(f"the hub exited early (code {proc.returncode}); see the streamlit messages above")
        return proc.wait()
    except KeyboardInterrupt:
        _log("stopping the hub …")
        return 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m verticore.demo", description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--prepare-only", action="store_true", help="prepare the demo state, then exit")
    g.add_argument("--no-prepare", action="store_true", help="start the hub without preparing")
    g.add_argument("--list", action="store_true", help="list the demo parts and whether they are ready, then exit")
    p.add_argument("--only", default=None, help="comma-separated parts to prepare: the installed apps' names "
                   "and 'core' (see --list)")
    p.add_argument("--port", type=int, default=None, help="port (default: $VERTICORE_PORT or 8501)")
    p.add_argument("--host", default=None, help="address (default: $VERTICORE_HOST or 127.0.0.1)")
    p.add_argument("--no-browser", action="store_true", help="do not try to open a web browser")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="with --list: print JSON")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m verticore.demo``; returns the process exit code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = _parse(argv)
    try:
        settings = get_settings()
    except VerticoreError as exc:  # e.g. VERTICORE_PORT=eighty: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    base = home()
    port = args.port if args.port is not None else settings.port
    if not 0 < port < 65536:
        print(f"error: port {port} is out of range", file=sys.stderr)
        return 2
    host = args.host or settings.host
    if args.list:
        try:
            rows = list_parts(base)
        except VerticoreError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                state = "ready" if row["ready"] else ("not prepared" if row["has_demo"] else "no demo")
                print(f"{row['name']:<24} {state:<14} {row['title']}")
        return 0
    _log(f"demo state: {base}" + ("  (fast mode)" if fast_mode() else ""))
    failed = False
    if not args.no_prepare:
        only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
        try:
            results = prepare_all(base, only=only, show_progress=not args.quiet)
        except VerticoreError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            _log("interrupted")
            return 130
        failed = any(r.status == "failed" for r in results)
        _log("preparation done: " + ", ".join(f"{r.name}={r.status}" for r in results))
    if args.prepare_only:
        return 1 if failed else 0
    if failed:
        _log("some demos failed to prepare; their pages may show errors")
    return serve(base, host, port, open_browser=not args.no_browser)


if __name__ == "__main__":
    sys.exit(main())
