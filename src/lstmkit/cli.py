"""The command line: argument parsing only; every command calls a library function.

Exit status: 0 success; 2 bad input or usage (one line on stderr saying what and how to fix it;
the traceback only with --debug); 1 only for a bug.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2."""


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run

    print(run(quick=args.quick), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lstmkit",
        description="The LSTM with first-class gates: train it, see inside it, ship it.",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    b = sub.add_parser("bench", help="speed of lstmkit's paths against torch.nn.LSTM and the GEMM ceiling")
    b.add_argument("--quick", action="store_true", help="small shapes and few repetitions (a smoke run)")
    b.set_defaults(func=_cmd_bench)
    return p


class _Parser(argparse.ArgumentParser):
    pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except (UsageError, ValueError, TypeError, FileNotFoundError, PermissionError) as e:
        if args.debug:
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"lstmkit {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
