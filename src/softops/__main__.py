"""Command line: ``python -m softops demo`` prints a tour of the operations."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="softops", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="print a tour of the operations, values and gradients")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from softops.demo import run_demo

        return run_demo()
    return 2


if __name__ == "__main__":
    sys.exit(main())
