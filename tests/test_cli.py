"""The `tinylls` command (host.cli) and the rule every tool shares (host/cli_common.py):
`--help` shows every default, bad input is one line `<name>: error: ...` with exit status 2,
Ctrl-C one line with exit status 130. Run as subprocesses through `python -m host.cli`, as a
user would (the installed console script itself is checked in a venv by the integrator)."""
from __future__ import annotations

import argparse
import importlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from host import cli, cli_common

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = list(cli_common.COMMANDS)
# the tools' own sub-commands (tinylls import ..., tinylls vww ...)
SUBCOMMANDS = {"import": ["import-tflite", "from-keras", "add-stats", "export-c"], "vww": ["build", "info", "convert"]}


def run(*argv: str, module: str = "host.cli", timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", module, *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def pyproject_version() -> str:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    return re.search(r'^version = "([^"]+)"', text, re.M).group(1)


def test_top_level_help_lists_every_command():
    r = run("--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: tinylls ")
    for cmd in COMMANDS:
        assert f"tinylls {cmd} " in r.stdout, cmd


def test_version_matches_the_package():
    import host
    assert host.__version__ == pyproject_version()
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"tinylls {pyproject_version()}", (r.stdout, r.stderr)


def test_console_script_is_declared():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^\[project\.scripts\]\ntinylls = "host\.cli:main"$', text, re.M)


def option_entries(help_text: str) -> list[str]:
    """The option entries of an argparse help text, continuation lines joined."""
    entries: list[str] = []
    section = help_text.split("\noptions:\n", 1)[1].split("\n\n", 1)[0]
    for line in section.splitlines():
        if re.match(r"^  -", line):
            entries.append(line.strip())
        elif entries and re.match(r"^ {6,}\S", line):
            entries[-1] += " " + line.strip()
        elif not line.strip() or not line.startswith(" "):
            entries.append("")            # a blank line or a heading ends the entry
    return [e for e in entries if e]


@pytest.mark.parametrize("argv", [[c] for c in COMMANDS]
                         + [[c, s] for c, subs in SUBCOMMANDS.items() for s in subs])
def test_subcommand_help_shows_defaults(argv):
    r = run(*argv, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: tinylls {' '.join(argv)}"), r.stdout[:200]
    required = set(re.findall(r"(?<![\[\w-])(-{1,2}[\w-]+)", r.stdout.split("\n\n")[0]))  # not in [...]
    for entry in option_entries(r.stdout):
        flags = re.findall(r"(?:^|, )(-{1,2}[\w-]+)", entry)
        if "--help" in flags or required & set(flags):
            continue
        assert "default" in entry, f"{' '.join(argv)}: {entry!r} does not show its default"


def tool_parsers(module: str, monkeypatch) -> list[argparse.ArgumentParser]:
    """Every parser of a tool (sub-commands included), caught when main(["--help"]) prints."""
    seen: list[argparse.ArgumentParser] = []
    monkeypatch.setattr(cli_common.ArgumentParser, "print_help", lambda self, file=None: seen.append(self))
    with pytest.raises(SystemExit) as e:
        importlib.import_module(module).main(["--help"])
    assert e.value.code == 0 and len(seen) == 1, module
    out, todo = [], list(seen)
    while todo:
        p = todo.pop()
        out.append(p)
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo.extend(a.choices.values())
    return out


@pytest.mark.parametrize("module", sorted(set(cli_common.COMMANDS.values()) | {"host.lossyproxy"}))
def test_every_option_of_every_tool_shows_its_default(module, monkeypatch):
    for p in tool_parsers(module, monkeypatch):
        assert isinstance(p, cli_common.ArgumentParser), p.prog
        fmt = p._get_formatter()
        for a in p._actions:
            if not a.option_strings or a.required or isinstance(a, argparse._HelpAction):
                continue
            assert a.help, f"{p.prog} {a.option_strings[0]}: no help text"
            assert "default" in fmt._expand_help(a), f"{p.prog} {a.option_strings[0]}: default not shown"


@pytest.mark.parametrize("argv, needle", [
    ([], "give a command"),
    (["bogus"], "invalid choice"),
    (["simulate", "--epochs", "-1"], "--epochs: must be >= 0"),
    (["simulate", "--no-such-option"], "unrecognized arguments"),
    (["stream", "--epochs", "-1", "--port", "loop://"], "--epochs: must be >= 0"),
    (["stream", "--data", "synthetic"], "give either --port"),
    (["import", "export-c", "missing.tlm", "-o", "out"], "missing.tlm"),
    (["import"], "required"),
    (["evaluate", "--model", "missing.tlm", "--data", "synthetic"], "missing.tlm"),
    (["vww", "info", "no/such/folder"], "no/such/folder"),
    (["plan", "--model", "missing.tlm"], "missing.tlm"),
    (["fleet", "--model", "m", "--data", "d", "--rounds", "0"], "--rounds"),
])
def test_bad_input_is_one_line_and_exit_2(argv, needle, tmp_path):
    r = run(*argv)
    lines = r.stderr.strip().splitlines()
    name = "tinylls" + (f" {argv[0]}" if argv and argv[0] in COMMANDS else "")
    assert r.returncode == 2, (argv, r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"{name}: error: ") and needle in lines[0], (argv, lines)


@pytest.mark.parametrize("module", ["host.simulate", "host.stream", "host.evaluate", "host.plan"])
def test_python_m_names_the_module(module):
    r = run("--no-such-option", module=module)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"{module}: error: "), lines


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    """In-process: whatever the tool is doing when Ctrl-C arrives, the same line and status."""
    import host.simulate

    def interrupted(argv=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(host.simulate, "main", interrupted)
    assert cli.main(["simulate"]) == 130
    assert capsys.readouterr().err == "tinylls simulate: interrupted\n"
    assert cli_common.run_main("host.simulate", interrupted) == 130
    assert capsys.readouterr().err == "host.simulate: interrupted\n"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_real_signal():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # a shell's background job inherits SIGINT ignored; the child gets the default back, as in a terminal
    p = subprocess.Popen([sys.executable, "-m", "host.cli", "simulate", "--quiet"], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(2.0)   # past interpreter start-up, somewhere in imports, data or training
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, (p.returncode, err)
    assert err.strip() == "tinylls simulate: interrupted", err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_lossyproxy_ctrl_c_is_its_stop(tmp_path):
    """Ctrl-C is how the proxy is stopped: one line with the traffic summary, status 130."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "host.lossyproxy", "--target", "127.0.0.1:9"], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = p.stderr.readline()        # the start-up line, written just before the serving loop
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert first.startswith("lossyproxy: socket://127.0.0.1:"), first
    assert p.returncode == 130, (p.returncode, err)
    assert err.strip() == err.strip().splitlines()[0], err          # one line
    assert err.startswith("host.lossyproxy: interrupted (traffic: {"), err


def test_plan_default_net(tmp_path):
    import json
    r = run("plan", "--board", "mps2-an386", "--train-layers", "none,all", "--json", str(tmp_path / "p.json"))
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "p.json").read_text())
    assert rep["model"].startswith("mobilenet") and rep["weighted_layers"] == 28
    rows = {row["train_layers"]: row for row in rep["boards"]["mps2-an386"]["configs"]}
    assert rows["all"]["arena_bytes"] == rep["scratch_bytes"] > 0 and rows["all"]["fits"]
    assert rows["all"]["ram_bytes"] > rows["none"]["ram_bytes"]
    assert f"scratch arena {rep['scratch_bytes']} B" in r.stdout
