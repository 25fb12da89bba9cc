"""What every tinylls command-line tool shares: the parser, the help format, errors, Ctrl-C.

One rule for all tools (`tinylls <cmd>` and `python -m host.<tool>` alike):

- bad input (argparse or the tool's own checks) prints ONE line on stderr,
  `<name>: error: <message>`, and exits with status 2. <name> is `tinylls <cmd>` when the tool
  runs under the `tinylls` console script (host.cli) and `host.<tool>` when it runs as
  `python -m host.<tool>`;
- Ctrl-C prints one line, `<name>: interrupted[ (detail)]`, and exits with status 130;
- `--help` shows the default of every option: an option's help text either says "default"
  itself (for defaults that depend on other options) or gets "(default: ...)" appended.

Tools build their parser with `ArgumentParser(tool="host.<tool>", ...)`, report errors with
`return fail(tool, exc)`, interrupts with `return interrupted(tool)` and end in
`sys.exit(run_main(tool, main))`.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from typing import Callable, Iterator, Optional, Sequence

# `tinylls` subcommand -> the module whose main(argv) runs it (host.cli dispatches on this)
COMMANDS = {
    "simulate": "host.simulate",
    "stream": "host.stream",
    "import": "host.quantize",
    "evaluate": "host.evaluate",
    "vww": "host.vww",
    "plan": "host.plan",
    "fleet": "host.fleet",
}

_active: Optional[tuple[str, str]] = None    # (subcommand, module) while host.cli runs one


@contextlib.contextmanager
def invoked_as(command: str) -> Iterator[None]:
    """While active, the tool of `command` names itself `tinylls <command>` (usage and errors)."""
    global _active
    saved, _active = _active, (command, COMMANDS[command])
    try:
        yield
    finally:
        _active = saved


def name(tool: str) -> str:
    """The name in error lines: `tinylls <cmd>` under the console script, else `host.<tool>`."""
    if _active is not None and _active[1] == tool:
        return f"tinylls {_active[0]}"
    return tool


def prog(tool: str) -> str:
    """The program name in usage lines: `tinylls <cmd>` or `python -m host.<tool>`."""
    if tool == "tinylls" or (_active is not None and _active[1] == tool):
        return name(tool)
    return f"python -m {tool}"


def fail(tool: str, message: object) -> int:
    """Print `<name>: error: <message>` as one line on stderr; returns the exit status 2."""
    text = " ".join(str(message).split("\n")).strip() or type(message).__name__
    print(f"{name(tool)}: error: {text}", file=sys.stderr, flush=True)
    return 2


def interrupted(tool: str, detail: str = "") -> int:
    """Print `<name>: interrupted` (plus detail) as one line on stderr; returns 130."""
    print(f"{name(tool)}: interrupted" + (f" ({detail})" if detail else ""), file=sys.stderr, flush=True)
    return 130


def run_main(tool: str, main: Callable[[Optional[Sequence[str]]], int],
             argv: Optional[Sequence[str]] = None) -> int:
    """main(argv), with a Ctrl-C anywhere (imports, parsing, the run) reported the one way."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        return interrupted(tool)


def version() -> str:
    """The installed package's version (metadata) when that installation is the `host` package
    running; else host.__version__ (a source checkout, an editable install of another tree)."""
    import os

    import host
    try:
        from importlib.metadata import PackageNotFoundError, distribution
        try:
            dist = distribution("tinylls")
            here = os.path.realpath(host.__file__)
            if os.path.realpath(str(dist.locate_file("host/__init__.py"))) == here:
                return dist.version
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    return host.__version__


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions/epilogs as written; appends "(default: ...)" to every option whose
    help text does not mention its default already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or action.required or action.default is argparse.SUPPRESS
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))
                or "default" in text.lower()):
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            shown = "on" if action.default else "off"
        elif action.default is None:
            shown = "not set"
        else:
            shown = "%(default)s"
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser with the shared help format and the one-line error rule.
    `tool` is the module name (host.simulate, ...); prog defaults to prog(tool). Subparsers
    inherit both."""

    def __init__(self, *args, tool: str, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        if not args:
            kwargs.setdefault("prog", prog(tool))
        super().__init__(*args, **kwargs)
        self.tool = tool

    def add_subparsers(self, **kwargs):
        kwargs.setdefault("parser_class", functools.partial(ArgumentParser, tool=self.tool))
        return super().add_subparsers(**kwargs)

    def error(self, message: str):
        sys.exit(fail(self.tool, message))


def int_at_least(low: int) -> Callable[[str], int]:
    """argparse type: an integer >= low (bad values become the one-line error, exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse
