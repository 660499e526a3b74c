"""Conventions shared by the four CLIs (verticore, finance-sentiment, customer-service, recommender):
--version, help text on every option, no reStructuredText in --help, fixed choices, exit codes
(usage 2, data 3, Ctrl-C 130) and pure JSON on stdout for --json."""
from __future__ import annotations

import importlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
import typer
import typer.main
from typer.testing import CliRunner

from verticore import cli_support
from verticore.cli_support import EXIT_DATA, EXIT_INTERRUPTED, EXIT_USAGE
from verticore.errors import DataError

CLIS = {  # console script -> module holding `app` and `main`
    "verticore": "verticore.cli",
    "finance-sentiment": "finance_sentiment.cli",
    "customer-service": "customer_service.cli",
    "recommender": "recommender.cli",
}
RST_MARKUP = re.compile(r"``|:(?:func|class|meth|mod|data|attr|ref|exc):`|^\s*\.\. [a-z-]+::", re.MULTILINE)
BIN = Path(sys.executable).parent


def _runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into stdout unless told not to
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def _app(script: str) -> typer.Typer:
    return importlib.import_module(CLIS[script]).app


def _commands(script: str):
    """(path, click command) for every command and group of one CLI, root included."""
    def walk(cmd, path):
        yield path, cmd
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            yield from walk(sub, path + [name])

    yield from walk(typer.main.get_command(_app(script)), [])


def _script(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"console script {name} is not installed next to {sys.executable}")
    return path


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


# -- help ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("script", CLIS)
def test_every_command_option_and_argument_has_help(script):
    missing = []
    for path, cmd in _commands(script):
        if path and not (cmd.help or "").strip():
            missing.append(f"{script} {' '.join(path)}: command")
        for param in cmd.params:
            if param.name != "help" and not (getattr(param, "help", None) or "").strip():
                missing.append(f"{script} {' '.join(path)} {'/'.join(param.opts)}")
    assert not missing, "no help text:\n" + "\n".join(missing)


def _registered_callbacks(app: typer.Typer) -> set:
    found = {c.callback for c in app.registered_commands}
    if app.registered_callback is not None:
        found.add(app.registered_callback.callback)
    for group in app.registered_groups:
        found |= _registered_callbacks(group.typer_instance)
    return found


@pytest.mark.parametrize("script", CLIS)
def test_only_commands_take_option_defaults(script):
    """A typer.Option(...) default on a plain helper (not a command) reaches it as an OptionInfo object."""
    import inspect

    from typer.models import ParameterInfo

    module = importlib.import_module(CLIS[script])
    commands = _registered_callbacks(module.app)
    for name, fn in vars(module).items():
        if inspect.isfunction(fn) and fn.__module__ == module.__name__ and fn not in commands:
            bad = [p for p, v in inspect.signature(fn).parameters.items() if isinstance(v.default, ParameterInfo)]
            assert not bad, f"{module.__name__}.{name}() has typer option defaults {bad}"


@pytest.mark.parametrize("script", CLIS)
def test_help_output_has_no_restructuredtext(script):
    runner = _runner()
    for path, _cmd in _commands(script):
        res = runner.invoke(_app(script), [*path, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, (path, res.output)
        found = RST_MARKUP.findall(res.stdout)
        assert not found, f"{script} {' '.join(path)} --help shows {found}:\n{res.stdout}"


# -- --version ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("script", CLIS)
def test_version_on_all_four(script):
    p = subprocess.run([str(_script(script)), "--version"], capture_output=True, text=True, env=_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"{script} {version('verticore')}\n"


# -- fixed choices ------------------------------------------------------------------------------------
def test_device_backend_and_method_choices():
    for ok in ("auto", "cpu", "cuda", "cuda:1", "mps", "CPU"):
        assert cli_support.parse_device(ok) == ok.lower()
    for bad in ("gpu", "cuda:x", ""):
        with pytest.raises(typer.BadParameter):
            cli_support.parse_device(bad)
    from verticore.finetune.methods import available_methods
    from verticore.inference.backends import available_backends

    # the names --help shows are the registries' built-ins (plugins may add more)
    assert set(cli_support.BUILTIN_BACKENDS) <= set(available_backends())
    assert set(cli_support.BUILTIN_METHODS) <= set(available_methods())
    assert cli_support.parse_backend("onnx") == "onnx"
    with pytest.raises(typer.BadParameter, match="not a registered backend"):
        cli_support.parse_backend("tensorflow")
    with pytest.raises(typer.BadParameter, match="not a registered fine-tuning method"):
        cli_support.parse_method("prefix-tuning-xl")


@pytest.mark.parametrize("args", [
    ["predict", "--model", "m", "--input", "i.csv", "--output", "o.csv", "--device", "gpu"],
    ["embed", "--input", "i.csv", "--output", "o.npy", "--backend", "tensorflow"],
    ["predict", "--model", "m", "--input", "i.csv", "--output", "o.csv", "--no-such-option"],
    ["no-such-command"],
])
def test_usage_errors_exit_2(args):
    res = _runner().invoke(_app("verticore"), args)
    assert res.exit_code == EXIT_USAGE, res.output
    assert "Traceback" not in res.output


def test_app_choices_are_checked():
    runner, wide = _runner(), {"COLUMNS": "250"}  # the error box would wrap the message at 80 columns
    res = runner.invoke(_app("finance-sentiment"), ["train", "--method", "prefix", "--max-steps", "1"], env=wide)
    assert res.exit_code == EXIT_USAGE and "not a registered fine-tuning method" in res.stderr
    res = runner.invoke(_app("finance-sentiment"), ["score", "x", "--device", "tpu"], env=wide)
    assert res.exit_code == EXIT_USAGE and "'tpu' is not one of" in res.stderr
    res = runner.invoke(_app("customer-service"), ["train-intents", "--train", "t", "--dev", "d", "--out", "o",
                                                   "--method", "entropy"], env=wide)
    assert res.exit_code == EXIT_USAGE and "max_prob, energy" in res.stderr


# -- data errors (3) and Ctrl-C (130), mapped by VerticoreGroup for every app --------------------------
# (script, argv, module attribute the command calls first)
PATCH_POINTS = [
    ("verticore", ["keys", "list"], "_key_store"),
    ("finance-sentiment", ["silence", "list"], "_store"),
    ("customer-service", ["ask", "--kb", "kb", "hello"], "_open_bot"),
    ("recommender", ["recommend", "u1"], "_load"),
]


def _raiser(exc: BaseException):
    def fn(*args, **kwargs):
        raise exc
    return fn


@pytest.mark.parametrize("script,argv,attr", PATCH_POINTS)
def test_data_error_exits_3_with_one_line(script, argv, attr, monkeypatch):
    monkeypatch.setattr(importlib.import_module(CLIS[script]), attr, _raiser(DataError("column 'text' is missing")))
    res = _runner().invoke(_app(script), argv)
    assert res.exit_code == EXIT_DATA
    assert res.stderr == "error: column 'text' is missing\n" and res.stdout == ""


@pytest.mark.parametrize("script,argv,attr", PATCH_POINTS)
def test_ctrl_c_exits_130_without_traceback(script, argv, attr, monkeypatch):
    monkeypatch.setattr(importlib.import_module(CLIS[script]), attr, _raiser(KeyboardInterrupt()))
    res = _runner().invoke(_app(script), argv)
    assert res.exit_code == EXIT_INTERRUPTED, res.output
    assert res.stderr == "interrupted\n" and "Traceback" not in res.output


def test_console_script_data_error_is_one_line_exit_3(tmp_path):
    p = subprocess.run([str(_script("verticore")), "usage", "--json", "--csv", "--home", str(tmp_path)],
                       capture_output=True, text=True, env=_env(), timeout=120)
    assert (p.returncode, p.stdout, p.stderr) == (EXIT_DATA, "", "error: give --json or --csv, not both\n")
    p = subprocess.run([str(_script("customer-service")), "ask", "--kb", str(tmp_path / "missing"), "hi"],
                       capture_output=True, text=True, env=_env(), timeout=300)
    assert p.returncode == EXIT_DATA and p.stderr.startswith("error: ") and p.stderr.count("\n") == 1


_READ_SYSCALL = {"x86_64": "0", "aarch64": "63"}.get(platform.machine())


def _in_stdin_read(pid: int) -> bool | None:
    """Whether the main thread sits in read(0, ...) (``/proc/PID/syscall``); None where that can't be seen."""
    if _READ_SYSCALL is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return None
    return len(fields) > 1 and fields[0] == _READ_SYSCALL and int(fields[1], 16) == 0


def _blocked_on_read(pid: int, settle_s: float = 0.6) -> bool:
    """True once the process has slept (state S) for ``settle_s`` in a row inside a read of stdin
    (not merely asleep elsewhere, e.g. during a slow start)."""
    stat = Path(f"/proc/{pid}/stat")
    since = None
    for _ in range(1200):
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        if state == "S" and _in_stdin_read(pid) is not False:
            since = since or time.monotonic()
            if time.monotonic() - since >= settle_s:
                return True
        else:
            since = None
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to see the child block on stdin")
def test_console_script_sigint_exits_130(tmp_path):
    # `--password-stdin` blocks on stdin's first line: a real Ctrl-C (SIGINT) arrives while it waits.
    # The child gets SIGINT's default action, as from a terminal: a test run started in the background
    # by a non-interactive shell (`pytest &`) ignores SIGINT, the child would inherit that, and Python
    # then installs no KeyboardInterrupt handler.
    proc = subprocess.Popen([str(_script("verticore")), "dashboard-users", "add", "ada", "--password-stdin",
                             "--home", str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert _blocked_on_read(proc.pid), "the CLI never blocked on stdin"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err and out == ""


# -- --json is pure JSON on stdout ----------------------------------------------------------------------
def _json_out(app: typer.Typer, argv: list[str]):
    res = _runner().invoke(app, argv)
    assert res.exit_code == 0, (argv, res.output)
    return json.loads(res.stdout)  # the whole of stdout, nothing before or after


def test_core_json_outputs(tmp_path):
    app, home = _app("verticore"), ["--home", str(tmp_path)]
    created = _json_out(app, ["keys", "create", "--name", "svc", "--scopes", "embed", "--json", *home])
    assert created["key"].startswith("vk_") and created["name"] == "svc"
    assert [k["name"] for k in _json_out(app, ["keys", "list", "--json", *home])] == ["svc"]
    assert _json_out(app, ["keys", "rotate", "svc", "--json", *home])["key"] != created["key"]
    assert _json_out(app, ["usage", "--json", *home]) == []
    assert _json_out(app, ["dashboard-users", "list", "--json", *home]) == []
    assert _json_out(app, ["models", "list", "--json", "--registry", str(tmp_path / "registry")]) == []


def test_finance_json_outputs(tmp_path):
    app, home = _app("finance-sentiment"), ["--home", str(tmp_path)]
    assert _json_out(app, ["alerts", "--json", *home]) == []
    assert _json_out(app, ["silence", "list", "--json", *home]) == []
    res = _runner().invoke(app, ["silence", "add", "-m", "entity=ABK", "--duration", "1h", "--author", "ada",
                                 "--comment", "maintenance", *home])
    assert res.exit_code == 0, res.output
    assert [s["matchers"] for s in _json_out(app, ["silence", "list", "--json", *home])] == [{"entity": "ABK"}]


def test_recommender_json_outputs(tmp_path):
    app, state = _app("recommender"), ["--state", str(tmp_path / "state")]
    items = tmp_path / "items.csv"
    items.write_text("item_id,title,description,tags\n"
                     "a,Ghost Ship,A haunted ship full of ghosts,horror\n"
                     "b,Haunted Hotel,Ghosts haunt an old hotel,horror\n"
                     "c,Bunny Hop,A cartoon rabbit learns to dance,cartoon\n", encoding="utf-8")
    inter = tmp_path / "inter.csv"
    inter.write_text("user,item,rating,timestamp\nu1,a,5,1\nu2,c,5,1\n", encoding="utf-8")
    built = _json_out(app, ["build", "--items", str(items), "--interactions", str(inter), "--no-cf", *state])
    assert built["items"] == 3
    assert _json_out(app, ["recommend", "u1", "-k", "1", "--json", *state])[0]["item"] == "b"
    assert len(_json_out(app, ["taste", "ghosts", "-k", "2", "--json", *state])) == 2
    assert _json_out(app, ["similar", "a", "-k", "1", "--json", *state])[0]["item"] == "b"
    assert _json_out(app, ["search", "rabbit", "-k", "1", "--json", *state])[0]["item"] == "c"
