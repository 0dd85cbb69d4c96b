"""The CLI's start-up: wall time of read commands, against a bare `python -c pass` in the same run.

Each command runs --runs times (after one warm-up) as a fresh process, as an operator types it; the
figures are the median and the slowest. Target: every read command under 0.3 s. Needs the stack up
and a token (PROMOTE_TOKEN, default: the stack's admin token).

    .venv/bin/python -m bench.cli --runs 15 --json /tmp/cli.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from devstack import admin_token_file

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 0.3
console = Console(highlight=False)


def timed(argv: list[str], runs: int, env: dict[str, str]) -> dict[str, float]:
    """Median and max wall seconds of `argv` over `runs` fresh processes (one warm-up run first)."""
    seconds = []
    for index in range(runs + 1):
        t0 = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True)
        if index and done.returncode == 0:
            seconds.append(time.perf_counter() - t0)
        elif done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.decode().strip()}")
    return {"median_s": round(statistics.median(seconds), 3), "max_s": round(max(seconds), 3)}


def main() -> None:
    """Time the commands, print them beside the baseline, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--service", help="the service for `status` and `history` (default: the first one)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    token = os.environ.get("PROMOTE_TOKEN") or admin_token_file().read_text()
    env = os.environ | {"PROMOTE_TOKEN": token.strip()}
    promote = [str(REPO / ".venv" / "bin" / "promote")]
    service = args.service or json.loads(subprocess.run(
        [*promote, "status", "--json"], env=env, capture_output=True, check=True).stdout)["services"][0]["service"]
    commands = {"python -c pass (baseline)": [sys.executable, "-c", "pass"],
                "promote --help": [*promote, "--help"],
                f"promote status {service}": [*promote, "status", service],
                f"promote status {service} --json": [*promote, "status", service, "--json"],
                f"promote history {service} --json": [*promote, "history", service, "--json", "--limit", "20"],
                "promote whoami": [*promote, "whoami"]}
    results = {name: timed(argv, args.runs, env) for name, argv in commands.items()}
    table = Table(title=f"CLI start-up, {args.runs} runs each (target < {TARGET_S} s)")
    for column in ("command", "median s", "max s", "met"):
        table.add_column(column)
    for name, figures in results.items():
        met = "-" if name.startswith("python") else ("yes" if figures["median_s"] < TARGET_S else "NO")
        table.add_row(name, f"{figures['median_s']:.3f}", f"{figures['max_s']:.3f}", met)
    console.print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
