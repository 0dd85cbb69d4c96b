"""How the CLI shows status, history and audits to people (rich tables)."""

from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(highlight=False)

STATE_STYLE = {"verified": "green", "failed": "red", "deploying": "yellow", "rolling-back": "yellow",
               "restoring": "yellow", "drifted": "red", "deployed": "cyan", "empty": "dim"}


def short(digest: str | None) -> str:
    """sha256:1d3e10ad…"""
    return f"{digest[:15]}…" if digest else "-"


def graph_text(graph: list[dict], marks: dict[str, str] | None = None) -> str:
    """A pipeline's graph on one line, environments side by side where it fans out:
    `dev -> staging -> prod-eu | prod-us -> global (after all of prod-eu, prod-us)`. An environment says what it
    comes after where the layer before it does not say so alone (a join, a branch). `marks` follow a name."""
    depth: dict[str, int] = {}
    for environment in graph:  # in the pipeline's order, every upstream comes first
        depth[environment["name"]] = 1 + max((depth[up] for up in environment["after"]), default=-1)
    layers: list[list[dict]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for environment in graph:
        layers[depth[environment["name"]]].append(environment)
    shown = []
    for index, layer in enumerate(layers):
        names = []
        for environment in layer:
            name = environment["name"] + (marks or {}).get(environment["name"], "")
            after = environment["after"]
            if len(after) > 1:
                name += f" (after {environment['require']} of {', '.join(after)})"
            elif after and len(layers[index - 1]) > 1:
                name += f" (after {after[0]})"
            names.append(name)
        shown.append(" | ".join(names))
    return " → ".join(shown)


def status_table(status: dict) -> Table:
    """One row per environment: what runs, its state, and what waits to enter."""
    table = Table(title=f"{status['service']}", title_justify="left")
    for column in ("environment", "version", "digest", "state", "waiting to enter"):
        table.add_column(column)
    for env, entry in status["environments"].items():
        style = STATE_STYLE.get(entry["state"], "yellow" if entry["state"].startswith("canary") else "")
        waiting = "; ".join(f"{w['version']} {w['outcome']}: {', '.join(w['reasons'])}" for w in entry["waiting"])
        digest = short(entry["digest"])
        moved = entry.get("tag_moved")
        if moved:  # the release keeps its digest; say that its tag names other bytes now
            digest += f"\n[yellow]tag moved: {moved['tag']} now names {short(moved['now_names'])}[/]"
        state = f"[{style}]{entry['state']}[/]"
        for line in (entry.get("drift") or {}).get("differences", []):  # what differs, until drift.resolved
            state += f"\n[red]{escape(line)}[/]"
        table.add_row(env, entry["version"] or "-", digest, state, waiting or "")
    return table


def summary(event: dict) -> str:
    """A one-line gist of an event's data for history and audit listings."""
    data = event.get("data", {})
    keys = ("digest", "moved_to", "reason", "reasons", "approver", "requested_by", "who", "check", "result", "author",
            "port", "how", "differences")
    parts = []
    for key in keys:
        if key in data and data[key] not in (None, [], ""):
            value = data[key]
            value = short(value) if key in ("digest", "moved_to") else value
            parts.append(f"{key}={', '.join(value) if isinstance(value, list) else value}")
    return " ".join(parts)


def entries_table(title: str, entries: list[dict]) -> Table:
    """Ledger entries (as the API answers them) as a table: seq, time, type, version, env and the gist."""
    table = Table(title=title, title_justify="left")
    for column in ("#", "time (UTC)", "event", "version", "env", "details"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        table.add_row(str(entry["seq"]), entry["time"][11:23], entry["type"], entry["version"] or "",
                      entry["env"] or "", summary(entry["event"]))
    return table
