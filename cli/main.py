"""`promote`: approve, reject, roll back, inspect and audit promotions; publish CI events; run the stack."""

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from cli import ops, render
from cli.dlq import dlq_app
from cli.errors import CliError
from cli.ledger import LedgerReader
from cli.replay import replay
from shared import limits
from shared.client import BusUnavailable
from shared.pipeline import PipelineError, load_pipeline_file
from shared.settings import Settings

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
pipeline_app = typer.Typer(help="Validate and apply pipeline definitions.", no_args_is_help=True)
stack_app = typer.Typer(help="The local stack (Kafka, PostgreSQL, services) without Docker.", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(stack_app, name="stack")
app.add_typer(dlq_app, name="dlq")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
EnvOpt = Annotated[str, typer.Option("--env", "-e", help="Environment name, e.g. prod.")]
WhoOpt = Annotated[str, typer.Option("--as", help="Who does this (recorded in the ledger).")]
WaitOpt = Annotated[float, typer.Option("--wait", help="Seconds to wait for the outcome (0: do not wait).")]


def settings() -> Settings:
    """Settings from PROMOTE_* environment variables."""
    return Settings()


def emit(payload: object) -> None:
    """Print JSON for scripts."""
    print(json.dumps(payload, indent=2, default=str))


@app.command()
def status(service: Annotated[str | None, typer.Argument(help="Service; all services if omitted.")] = None,
           as_json: JsonOpt = False) -> None:
    """What runs in each environment, its state, and what waits to enter."""
    async def load() -> list[dict]:
        async with LedgerReader(settings()) as ledger:
            names = [service] if service else await ledger.services()
            return [await ledger.status(name) for name in names]

    statuses = asyncio.run(load())
    if as_json:
        emit(statuses[0] if service else {"services": statuses})
        return
    if not statuses:
        render.console.print("no services yet: apply a pipeline with `promote pipeline apply FILE`")
    for one in statuses:
        render.console.print(render.status_table(one))


@app.command()
def history(service: str, env: Annotated[str | None, typer.Option("--env", "-e")] = None,
            limit: Annotated[int, typer.Option(help="Show the last N entries.")] = 50, as_json: JsonOpt = False) -> None:
    """The service's events from the ledger, oldest first."""
    async def load():
        async with LedgerReader(settings()) as ledger:
            return await ledger.history(service, env, limit)

    rows = asyncio.run(load())
    if as_json:
        emit([render.entry_json(row) for row in rows])
    else:
        render.console.print(render.entries_table(f"history of {service}" + (f" in {env}" if env else ""), rows))


@app.command()
def audit(service: Annotated[str | None, typer.Argument()] = None,
          version: Annotated[str | None, typer.Argument()] = None,
          verify: Annotated[bool, typer.Option("--verify", help="Only check the ledger's hash chain.")] = False,
          as_json: JsonOpt = False) -> None:
    """The whole chain of one release (build, gates, approvals, deployments, rollbacks) and the hash-chain check."""
    if not verify and not (service and version):
        raise CliError("give SERVICE VERSION, or --verify to check the hash chain only")

    async def load():
        async with LedgerReader(settings()) as ledger:
            rows = await ledger.audit(service, version) if service and version else []
            return rows, await ledger.verify_chain()

    rows, (checked, broken) = asyncio.run(load())
    chain = {"entries": checked, "intact": broken is None, "first_broken_seq": broken}
    if as_json:
        emit({"service": service, "version": version, "events": [render.entry_json(r) for r in rows], "chain": chain})
    else:
        if rows or not verify:
            render.console.print(render.entries_table(f"audit of {service} {version}", rows))
        verdict = "[green]intact[/]" if broken is None else f"[red]broken at entry #{broken}[/]"
        render.console.print(f"hash chain: {checked} entries, {verdict}")
    if broken is not None:
        raise typer.Exit(1)


@app.command()
def approve(service: str, version: str, env: EnvOpt, who: WhoOpt,
            comment: Annotated[str | None, typer.Option(help="Why.")] = None, wait: WaitOpt = 15.0) -> None:
    """Approve a release for an environment; shows the gate's verdict."""
    _decide(service, version, env, who, True, comment, wait)


@app.command()
def reject(service: str, version: str, env: EnvOpt, who: WhoOpt,
           comment: Annotated[str | None, typer.Option(help="Why.")] = None, wait: WaitOpt = 15.0) -> None:
    """Reject a release for an environment (its promotion there fails)."""
    _decide(service, version, env, who, False, comment, wait)


def _decide(service: str, version: str, env: str, who: str, granted: bool, comment: str | None, wait: float) -> None:
    data = ops.decision(service, version, env, who, granted, comment)
    verb = "approval" if granted else "rejection"

    async def held() -> tuple[str, list[str]] | None:
        async with LedgerReader(settings()) as ledger:
            return await ledger.waiting(service, version, env)

    state = asyncio.run(held()) if wait > 0 else ("pending", [])
    if wait <= 0 or state is None or state[0] != "pending":
        event = asyncio.run(ops.publish(settings(), data))
        render.console.print(f"{verb} recorded ({event.id})")
        if state is None:
            render.console.print(f"no promotion of {service} {version} into {env} is waiting: "
                                 "it counts when one is")
        elif state[0] == "failed":
            render.console.print(f"the promotion of {service} {version} into {env} already failed "
                                 f"({'; '.join(state[1])}): this changes nothing")
        return
    fields = dict(service=service, version=version, env=env)
    outcome = asyncio.run(ops.publish_and_wait(
        settings(), data, {"gate.passed": fields, "gate.pending": fields, "gate.failed": fields}, wait))
    reasons = getattr(outcome.data, "reasons", [])
    render.console.print(f"{verb} recorded; {env} gate for {service} {version}: "
                         f"{outcome.envelope.type.split('.')[1]}" + (f" ({'; '.join(reasons)})" if reasons else ""))


@app.command()
def rollback(service: str, env: EnvOpt, who: WhoOpt,
             reason: Annotated[str | None, typer.Option(help="Why.")] = None, wait: WaitOpt = 60.0) -> None:
    """Return an environment to its last verified release (before the current one)."""
    data = ops.rollback(service, env, who, reason)
    if wait <= 0:
        render.console.print(f"rollback requested ({asyncio.run(ops.publish(settings(), data)).id})")
        return
    fields = dict(service=service, env=env)
    outcome = asyncio.run(ops.publish_and_wait(
        settings(), data, {"rollback.completed": fields, "rollback.failed": fields}, wait))
    if outcome.envelope.type == "rollback.failed":
        raise CliError(f"rollback of {service} in {env} failed: {outcome.data.reason}")
    render.console.print(f"{service} in {env} is back on {outcome.data.version} ({render.short(outcome.data.digest)})")


@app.command("build-completed")
def build_completed(
    service: Annotated[str, typer.Option(help="Service name, e.g. payments.")],
    version: Annotated[str, typer.Option(help="Version, e.g. 2.4.1.")],
    commit: Annotated[str, typer.Option(help="Source commit.")],
    author: Annotated[str, typer.Option(help="Who authored the change.")],
    file: Annotated[Path | None, typer.Option(help="The artifact file (digest computed here; copied into the "
                                                   "drop directory unless under an artifact root).",
                                              exists=True, dir_okay=False)] = None,
    uri: Annotated[str | None, typer.Option(help="The artifact URI, if not --file.")] = None,
    digest: Annotated[str | None, typer.Option(help="sha256:<hex>, required with --uri.")] = None,
    check: Annotated[list[str], typer.Option(help="NAME=passed|failed, repeatable.")] = [],  # noqa: B006
) -> None:
    """Publish build.completed, as CI does after building an artifact once."""
    if file is None and (uri is None or digest is None):
        raise CliError("give --file PATH, or --uri URI with --digest sha256:<hex>")
    checks = dict(_split_check(item) for item in check)
    file = ops.into_drop(settings(), file) if file is not None else None  # intake reads only under its roots
    event = asyncio.run(ops.publish(settings(), ops.build_completed(service, version, file, uri, digest,
                                                                   commit, author, checks)))
    render.console.print(f"build.completed {service} {version} {event.data.artifact.digest} ({event.id})")


def _split_check(item: str) -> tuple[str, str]:
    name, _, result = item.partition("=")
    if result not in ("passed", "failed") or not name:
        raise CliError(f"--check {item!r}: expected NAME=passed or NAME=failed")
    return name, result


@app.command()
def evidence(service: str, version: str, env: EnvOpt,
             check: Annotated[str, typer.Option(help="The check's name, e.g. integration-tests.")],
             result: Annotated[str, typer.Option(help="passed or failed.")],
             digest: Annotated[str | None, typer.Option(help="Defaults to the registered digest.")] = None,
             url: Annotated[str | None, typer.Option(help="Link to the report.")] = None) -> None:
    """Publish evidence.recorded: a check's result for a release in an environment."""
    if result not in ("passed", "failed"):
        raise CliError(f"--result must be passed or failed, not {result!r}")

    async def run():
        nonlocal digest
        if digest is None:
            async with LedgerReader(settings()) as ledger:
                found = await ledger.author_and_digest(service, version)
            if found is None:
                raise CliError(f"{service} {version} is not registered; pass --digest")
            digest = found[1]
        return await ops.publish(settings(), ops.evidence(service, version, digest, env, check, result, url))

    event = asyncio.run(run())
    render.console.print(f"evidence {check}={result} for {service} {version} in {env} ({event.id})")


@pipeline_app.command("validate")
def pipeline_validate(file: Path) -> None:
    """Check a pipeline file; errors are listed as FILE:LINE:COLUMN: where: what."""
    definition = load_pipeline_file(file)
    render.console.print(f"{file}: valid pipeline for {definition.service} "
                         f"({' -> '.join(definition.environment_names)}), version {definition.content_hash[:19]}…")


@pipeline_app.command("apply")
def pipeline_apply(file: Path, who: WhoOpt = "operator") -> None:
    """Validate a pipeline file and publish it (pipeline.applied): versioned, audited, replayable."""
    definition = load_pipeline_file(file)
    event = asyncio.run(ops.publish(settings(), ops.pipeline_applied(definition, who)))
    render.console.print(f"pipeline for {definition.service} applied: version {definition.content_hash} ({event.id})")


@stack_app.command("up")
def stack_up(services: Annotated[bool, typer.Option(help="Also start the five services.")] = True) -> None:
    """Start Kafka, PostgreSQL and (by default) the services; idempotent."""
    import devstack

    devstack.up(services=services)


@stack_app.command("down")
def stack_down() -> None:
    """Stop what `stack up` started (apps, services, Kafka, PostgreSQL)."""
    import devstack

    devstack.down()


@stack_app.command("status")
def stack_status(as_json: JsonOpt = False) -> None:
    """What runs in the local stack."""
    import devstack
    from devstack.__main__ import print_status

    state = devstack.status()
    emit(state) if as_json else print_status(state)


@app.command()
def asyncapi(out: Annotated[Path, typer.Option(help="Folder for <service>.json.")] = Path("docs/asyncapi")) -> None:
    """Generate the AsyncAPI documents from the services' FastStream apps."""
    from cli import asyncapi as generator

    for path in generator.write(out):
        render.console.print(f"wrote {path}")


@app.command()
def demo(service: Annotated[str, typer.Option(help="Service name for the demo (a fresh one is picked "
                                                       "if it already has history).")] = "payments") -> None:
    """Run the walking-skeleton scenario on the local stack (./dev-stack demo starts the stack first)."""
    from cli.demo import run_demo

    asyncio.run(run_demo(settings(), service))


@app.command()
def load(url: Annotated[str, typer.Argument(help="A loopback URL, e.g. an environment's router: "
                                                 "http://127.0.0.1:8080.")],
         rate: Annotated[float, typer.Option(help="Requests per second.")] = 50.0,
         duration: Annotated[float | None, typer.Option(help="Seconds to run (10 unless --count is given).")] = None,
         count: Annotated[int | None, typer.Option(help="Stop after this many requests.")] = None,
         path: Annotated[str | None, typer.Option(help="Request path (default: the URL's own, else /).")] = None,
         concurrency: Annotated[int, typer.Option(help="Requests in flight at most.")] = 16,
         as_json: JsonOpt = False) -> None:
    """Send paced GET requests to a loopback URL for a while and summarise the answers (Ctrl-C ends early)."""
    import signal
    from urllib.parse import urlsplit

    from shared.loadgen import generate

    seconds = 10.0 if duration is None and count is None else duration

    async def run():
        stop = asyncio.Event()  # Ctrl-C: stop sending, let what is in flight finish, report
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
        with render.console.status(f"load: {rate:g} requests/s to {url}") as shown:
            return await generate(url, rate=rate, duration=seconds, count=count, concurrency=concurrency,
                                  path=path or urlsplit(url).path or "/", stop=stop,
                                  on_progress=lambda done, failed: shown.update(f"load: {done} done, {failed} failed"))

    try:
        report = asyncio.run(run())
    except ValueError as error:
        raise CliError(str(error)) from None
    emit(report.as_dict()) if as_json else render.console.print(f"load: {report.summary()}", soft_wrap=True)


app.command()(replay)


def run() -> None:
    """Console entry point: errors become one line on stderr and a non-zero exit."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # its connection errors are reported by us, once
    try:
        app(prog_name="promote")  # usage errors: typer prints them and exits 2
    except PipelineError as error:
        print(str(error), file=sys.stderr)
        sys.exit(1)
    except (CliError, BusUnavailable, TimeoutError, OSError) as error:
        print(f"promote: error: {error}", file=sys.stderr)
        sys.exit(1)
    except ValidationError as error:  # input past the limits (settings, event data): its first reason
        print(f"promote: error: {limits.first_reason(error, located=False)}", file=sys.stderr)
        sys.exit(1)
    except Exception as error:  # a bug: still one line, with its type, for the report
        print(f"promote: unexpected error: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run()
