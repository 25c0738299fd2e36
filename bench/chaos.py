"""Chaos bench: the full stack as real processes (core, worker with the example cloud, metrics exporter,
a script hooked onto post_collect), one random process killed with SIGKILL at a random moment, again
and again; then everything settles, one more run goes without kills, and the whole session is audited.

Run it with ``python bench/chaos.py --kills 300 --seed 7`` (or ``python -m bench.chaos ...``).

It prints the kills survived per process and where they landed, the runs checked (succeeded, failed
with a recorded error), runs lost or duplicated in the history, deletes checked and double deletes
(both must be zero), and every problem found; the exit code is 1 when there is any.
The test suite runs a short loop of the same harness (tests/chaos/test_chaos.py).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent


async def main(args: argparse.Namespace) -> int:
    from tests.chaos.loop import chaos
    from tests.chaos.stack import ChaosStack, StackOptions

    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="resoto-chaos-"))
    options = StackOptions(accounts=args.accounts, regions=args.regions, resources=args.resources)
    print(f"chaos: {args.kills} kills, seed {args.seed}, stack in {root}", flush=True)
    try:
        async with ChaosStack(root, options) as stack:
            report = await chaos(stack, args.kills, args.seed)
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    for line in report.summary():
        print(line)
    return 1 if report.all_problems() else 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=200, help="processes to kill (default: 200)")
    parser.add_argument("--seed", type=int, default=1, help="seed of every random choice (default: 1)")
    parser.add_argument("--accounts", type=int, default=2, help="example cloud: accounts (default: 2)")
    parser.add_argument("--regions", type=int, default=2, help="example cloud: regions per account (default: 2)")
    parser.add_argument("--resources", type=int, default=20, help="example cloud: resources per region (default: 20)")
    parser.add_argument("--dir", help="directory for the stack (default: a temporary one, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.path.insert(0, str(REPOSITORY))  # the harness lives in the repository's tests/chaos
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
