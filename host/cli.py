"""tinylls: one command for the host tools.

    tinylls simulate ...   on-device LLS training simulated on the host (python -m host.simulate)
    tinylls stream ...     train on a board over serial / QEMU (python -m host.stream)
    tinylls import ...     make model files and C sources (python -m host.quantize)
    tinylls evaluate ...   accuracy of a model on a dataset (python -m host.evaluate)
    tinylls vww ...        build / inspect / convert Visual Wake Words data (python -m host.vww)
    tinylls plan ...       RAM and flash per board and trainable set, what fits (python -m host.plan)
    tinylls fleet ...      federated fine-tuning of many devices on Flower (python -m host.fleet)

Each subcommand is the tool's own main(argv): the options, defaults and output are those of
`python -m host.<tool>`; `tinylls <cmd> --help` lists them. Bad input: one line
`tinylls <cmd>: error: ...`, exit status 2; Ctrl-C: `tinylls <cmd>: interrupted`, exit 130
(host/cli_common.py).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from host import cli_common


def build_parser() -> argparse.ArgumentParser:
    """The top level only (--help, --version, the command name); each command parses its own
    arguments."""
    p = cli_common.ArgumentParser(tool="tinylls", description=__doc__.split("\n\n")[0],
                                  epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--version", action="version", version=f"tinylls {cli_common.version()}")
    p.add_argument("command", metavar="COMMAND", choices=list(cli_common.COMMANDS),
                   help="one of: " + ", ".join(cli_common.COMMANDS))
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="...", help="the command's own arguments")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        return cli_common.fail("tinylls", "give a command: " + ", ".join(cli_common.COMMANDS) + " (or --help)")
    if argv[0] not in cli_common.COMMANDS:
        build_parser().parse_args(argv)     # --help / --version exit 0, anything else exits 2
        return 2                            # not reached
    command, rest = argv[0], argv[1:]
    module = cli_common.COMMANDS[command]
    with cli_common.invoked_as(command):
        try:
            tool_main = importlib.import_module(module).main
        except KeyboardInterrupt:
            return cli_common.interrupted(module)
        return cli_common.run_main(module, tool_main, rest)


if __name__ == "__main__":
    sys.exit(main())
