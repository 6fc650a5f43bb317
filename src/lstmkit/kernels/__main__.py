"""``python -m lstmkit.kernels build``: build the fused kernels now (``make setup`` runs it), so that
no later command waits for the compiler. Prints what it built, why and how long it took, or that
the cache already holds a build for these sources, this torch, Python and CPU.

Exit status: 0 the kernels are ready; 1 they cannot be built here (the line says why; lstmkit then
runs torch's LSTM and the reference path instead); 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lstmkit.kernels", description="Build lstmkit's fused CPU kernels into the cache."
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("build", help="build the fused kernels into the cache (nothing to do if they are there)")
    args = p.parse_args(argv)
    if args.command != "build":
        p.print_help(sys.stderr)
        return 2
    from . import _build, available, build_info, unavailable_reason

    if not available():
        print(f"lstmkit kernels: not built: {unavailable_reason()}", file=sys.stderr)
        print("lstmkit runs without them (torch's LSTM and the reference path)", file=sys.stderr)
        return 1
    rep = _build.last_build
    where = f" in {rep.folder}" if rep is not None else ""
    if rep is not None and rep.built:
        print(f"lstmkit kernels: built in {rep.seconds:.0f} s ({rep.why}){where}: {build_info()}")
    else:
        print(f"lstmkit kernels: already built for these sources, torch, Python and CPU{where}: {build_info()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
