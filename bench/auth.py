"""Authentication's cost: the latency and throughput benchmarks with and without it, in one run.

"Without" is the last commit before the trust work (PLAINTEXT Kafka without ACLs, PostgreSQL with
trust and one superuser role, uuid5 ids), checked out into a git worktree under .cache/ and run with
its own stack (its own var/); "with" is this checkout (SASL/SCRAM-SHA-512 with ACLs, a password and a
role per service, HMAC ids, the artifact-source checks). Both run the same bench.latency and
bench.throughput, one after the other, on the same machine; each stack is stopped before the other
starts. The figures are printed side by side with the ratio; the target is "at most 10 % slower".

    .venv/bin/python -m bench.auth --builds 600 --rate 20 --seconds 30 --json /tmp/auth.json
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
BEFORE = "afb49c2"  # the last commit of main before issue 9's trust work
console = Console(highlight=False)


def worktree(commit: str) -> Path:
    """A checkout of `commit` under .cache/bench-before/, sharing this checkout's Kafka jars."""
    path = REPO / ".cache" / "bench-before" / commit
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", "--force", str(path), commit], cwd=REPO, check=True,
                       capture_output=True)
    jars = path / ".cache" / "kafka"
    if not jars.exists() and (REPO / ".cache" / "kafka").exists():
        jars.parent.mkdir(parents=True, exist_ok=True)
        jars.symlink_to(REPO / ".cache" / "kafka")
    return path


def run(root: Path, module: str, args: list[str], out: Path) -> dict:
    """`python -m <module> … --json out` in `root` (its code and its stack), with this venv's interpreter."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PROMOTE_")}
    command = [sys.executable, "-m", module, *args, "--json", str(out)]
    console.print(f"[dim]{root.name}: {' '.join(command[1:])}[/]")
    subprocess.run(command, cwd=root, env=env | {"PYTHONPATH": str(root)}, check=True)
    return json.loads(out.read_text())


def stack_down(root: Path) -> None:
    """Stop the stack that `root`'s code started."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PROMOTE_")}
    subprocess.run([sys.executable, "-m", "devstack", "down"], cwd=root, env=env | {"PYTHONPATH": str(root)},
                   check=False, capture_output=True)


def figures(latency: dict, throughput: dict) -> dict[str, float]:
    """The compared figures: chain and hop p50/p99 (ms), and promotions/builds per second."""
    hops = latency["services"]["hops"]
    picked = {f"{hop} p{q} (ms)": hops[hop][f"p{q}"] for hop in ("chain", "intake", "gates", "deployer")
              for q in (50, 99)}
    services = throughput["services"]
    picked["builds registered/s"] = services["registered_per_s"]
    picked["promotions into dev/s"] = services["dev_promotions_per_s"]
    picked["raw Kafka echo hop p99 (ms)"] = latency["baseline"]["hop"]["p99"]
    picked["raw Kafka echo pass-through/s"] = throughput["baseline"]["pass_through_per_s"]
    return picked


def main() -> None:
    """Run both, print the comparison, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default=BEFORE, help=f"the commit without authentication (default {BEFORE})")
    parser.add_argument("--builds", type=int, default=600, help="latency: promotions to time (default 600)")
    parser.add_argument("--rate", type=float, default=20.0, help="latency: builds per second (default 20)")
    parser.add_argument("--seconds", type=float, default=30.0, help="throughput: window (default 30)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    out = REPO / ".cache" / "bench-auth"
    out.mkdir(parents=True, exist_ok=True)
    latency_args = ["--builds", str(args.builds), "--rate", str(args.rate)]
    throughput_args = ["--seconds", str(args.seconds)]
    results = {}
    before = worktree(args.before)
    for label, root in (("without authentication", before), ("with authentication", REPO)):
        for other in (before, REPO):
            stack_down(other)
        results[label] = figures(run(root, "bench.latency", latency_args, out / f"{root.name}-latency.json"),
                                 run(root, "bench.throughput", throughput_args, out / f"{root.name}-throughput.json"))
    stack_down(before)
    table = Table(title=f"authentication's cost (before: {args.before})")
    for column in ("figure", "without", "with", "with / without"):
        table.add_column(column, justify="right" if column != "figure" else "left")
    without, with_auth = results["without authentication"], results["with authentication"]
    for name in without:
        a, b = without[name], with_auth[name]
        table.add_row(name, f"{a:.1f}" if a is not None else "-", f"{b:.1f}" if b is not None else "-",
                      f"{b / a:.2f}" if a and b else "-")
    console.print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"before": args.before, **results}, indent=2))


if __name__ == "__main__":
    main()
