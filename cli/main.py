"""`promote`: approve, reject, roll back, inspect and audit promotions through the operator API; publish CI events;
run the stack.

Operator commands are calls to the API with your token (`promote login`, PROMOTE_TOKEN): who acts is the
token's verified identity. Only what needs more imports it at its own start (read commands stay fast).
"""

import enum
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from cli import api
from cli.canary import canary_app
from cli.drift import drift as drift_command
from cli.errors import CliError

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
pipeline_app = typer.Typer(help="Validate and apply pipeline definitions.", no_args_is_help=True)
stack_app = typer.Typer(help="The local stack (Kafka, PostgreSQL, services) without Docker.", no_args_is_help=True)
dlq_app = typer.Typer(help="Inspect and resubmit dead letters.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens for people and robots (admin).", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(stack_app, name="stack")
app.add_typer(dlq_app, name="dlq")
app.add_typer(token_app, name="token")
app.add_typer(canary_app, name="canary")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
EnvOpt = Annotated[str, typer.Option("--env", "-e", help="Environment name, e.g. prod.")]
WaitOpt = Annotated[float, typer.Option("--wait", help="Seconds to wait for the outcome (0: do not wait).")]


def emit(payload: object) -> None:
    """Print JSON for scripts."""
    print(json.dumps(payload, indent=2, default=str))


def console():
    """The rich console (imported when something is printed for people)."""
    from cli import render

    return render.console


@app.command()
def login(token: Annotated[str | None, typer.Option(help="The API token (asked for when not given).")] = None) -> None:
    """Check a token with the API and keep it in the token file for later commands."""
    value = token or typer.prompt("API token", hide_input=True)
    who = api.call("GET", "/v1/whoami", bearer=value)
    path = api.save_token(value)
    print(f"logged in as {who['subject']} ({', '.join(who['roles']) or 'no roles'}); token kept in {path}")


@app.command()
def whoami(as_json: JsonOpt = False) -> None:
    """Who your token says you are, and your roles."""
    who = api.call("GET", "/v1/whoami")
    emit(who) if as_json else print(f"{who['subject']} ({who['method']}): {', '.join(who['roles']) or 'no roles'}")


@app.command()
def status(service: Annotated[str | None, typer.Argument(help="Service; all services if omitted.")] = None,
           as_json: JsonOpt = False) -> None:
    """What runs in each environment, its state, and what waits to enter."""
    statuses = api.call("GET", "/v1/status", params={"service": service} if service else None)["services"]
    if as_json:
        emit(statuses[0] if service else {"services": statuses})
        return
    from cli import render

    if not statuses:
        render.console.print("no services yet: apply a pipeline with `promote pipeline apply FILE`")
    for one in statuses:
        render.console.print(render.status_table(one))
        if one.get("graph"):  # on a line of its own: a table's caption would wrap at the table's width
            render.console.print(f"pipeline: {render.graph_text(one['graph'])}")


@app.command()
def history(service: str, env: Annotated[str | None, typer.Option("--env", "-e")] = None,
            limit: Annotated[int, typer.Option(help="Show the last N entries.")] = 50, as_json: JsonOpt = False) -> None:
    """The service's events from the ledger, oldest first."""
    params = {"limit": limit} | ({"env": env} if env else {})
    entries = api.call("GET", f"/v1/services/{service}/history", params=params)["entries"]
    if as_json:
        emit(entries)
        return
    from cli import render

    render.console.print(render.entries_table(f"history of {service}" + (f" in {env}" if env else ""), entries))


@app.command()
def audit(service: Annotated[str | None, typer.Argument()] = None,
          version: Annotated[str | None, typer.Argument()] = None,
          verify: Annotated[bool, typer.Option("--verify", help="Only check the ledger's hash chain.")] = False,
          as_json: JsonOpt = False) -> None:
    """The whole chain of one release (build, gates, approvals, deployments, rollbacks) and the hash-chain check."""
    if not verify and not (service and version):
        raise CliError("give SERVICE VERSION, or --verify to check the hash chain only")
    if service and version:
        report = api.call("GET", f"/v1/services/{service}/releases/{version}/audit")
    else:
        report = {"service": None, "version": None, "events": [], "chain": api.call("GET", "/v1/ledger/chain")}
    chain = report["chain"]
    if as_json:
        emit(report)
    else:
        from cli import render

        if report["events"] or not verify:
            render.console.print(render.entries_table(f"audit of {service} {version}", report["events"]))
        if report.get("graph"):
            verified = {entry["env"] for entry in report["events"] if entry["type"] == "verification.passed"}
            marks = {name: " ✓" for name in verified}
            render.console.print(f"pipeline (✓ verified there): {render.graph_text(report['graph'], marks)}")
        verdict = "[green]intact[/]" if chain["intact"] else f"[red]broken at entry #{chain['first_broken_seq']}[/]"
        render.console.print(f"hash chain: {chain['entries']} entries, {verdict}")
    if not chain["intact"]:
        raise typer.Exit(1)


@app.command()
def prove(service: str, env: EnvOpt,
          output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the bundle (JSON).")],
          wait: Annotated[float, typer.Option(help="Seconds to wait for the ledger's next signed checkpoint.")] = 30.0,
          as_json: JsonOpt = False) -> None:
    """Export the evidence bundle of the release running in an environment: its build, gate verdicts with their
    evidence, approvals, signatures, deployments and verifications, as ledger entries proven against a signed
    checkpoint of the ledger. Anyone checks it offline with `promote verify-bundle`."""
    bundle = api.call("GET", f"/v1/services/{service}/environments/{env}/bundle", again_for=wait, timeout=120.0)
    raw = json.dumps(bundle, indent=1, sort_keys=True).encode()
    try:
        output.write_bytes(raw)
    except OSError as error:
        raise CliError(f"cannot write {output}: {error.strerror}") from None
    summary = {"service": service, "env": env, "version": bundle["version"], "digest": bundle["digest"],
               "entries": len(bundle["entries"]), "file": str(output), "bytes": len(raw)}
    emit(summary) if as_json else print(
        f"{output}: {service} {bundle['version']} ({bundle['digest'][:19]}…) in {env}, "
        f"{len(bundle['entries'])} ledger entries ({len(raw)} bytes)")


@app.command("verify-bundle")
def verify_bundle(file: Annotated[Path, typer.Argument(help="A bundle written by `promote prove`.")],
                  keys: Annotated[list[Path], typer.Option(
                      "--keys", "-k", help="A public key file <key id>.pub (PEM) or a directory of them: the "
                                           "ledger's (ledger.pub) and the signers' the gates name. Repeatable.")],
                  as_json: JsonOpt = False) -> None:
    """Check an evidence bundle offline, with public keys only; exit 1 naming the first thing that does not hold."""
    from shared.bundle import BundleError, load, verify
    from shared.signature_keys import TrustedKey

    trusted: dict[str, TrustedKey] = {}
    for path in keys:
        files = sorted(path.glob("*.pub")) if path.is_dir() else [path]
        for key_file in files:
            try:
                trusted[key_file.stem] = TrustedKey.from_pem(key_file.stem, key_file.read_bytes())
            except OSError as error:
                raise CliError(f"cannot read key {key_file}: {error.strerror}") from None
            except ValueError as error:
                raise CliError(str(error)) from None
    try:
        raw = file.read_bytes()
    except OSError as error:
        raise CliError(f"cannot read {file}: {error.strerror}") from None
    try:
        verified = verify(load(raw), trusted)
    except BundleError as error:
        if as_json:
            emit({"verified": False, "reason": str(error)})
            raise typer.Exit(1)
        raise CliError(f"{file}: does not hold: {error}") from None
    if as_json:
        emit({"verified": True, "service": verified.service, "env": verified.env, "version": verified.version,
              "digest": verified.digest, "entries": verified.entries, "checkpoint": verified.checkpoint,
              "supply_chain": verified.supply_chain, "approvals": verified.approvals})
        return
    print(f"{file}: holds: {verified.service} {verified.version} ({verified.digest}) in {verified.env}")
    print(f"  {verified.entries} ledger entries proven against checkpoint {verified.checkpoint['size']} "
          f"signed at {verified.checkpoint['signed_at']}")
    for line in verified.supply_chain:
        print(f"  supply-chain gate held again: {line}")
    for line in verified.approvals:
        print(f"  approved: {line}")


CommentOpt = Annotated[str | None, typer.Option(help="Why.")]


@app.command()
def approve(service: str, version: str, env: EnvOpt, comment: CommentOpt = None, wait: WaitOpt = 15.0) -> None:
    """Approve a release for an environment (as your token's identity); shows the gate's verdict."""
    _decide(service, version, env, True, comment, wait)


@app.command()
def reject(service: str, version: str, env: EnvOpt, comment: CommentOpt = None, wait: WaitOpt = 15.0) -> None:
    """Reject a release for an environment (its promotion there fails)."""
    _decide(service, version, env, False, comment, wait)


def _decide(service: str, version: str, env: str, granted: bool, comment: str | None, wait: float) -> None:
    body = {"env": env, "decision": "granted" if granted else "rejected", "comment": comment, "wait": wait}
    answer = api.call("POST", f"/v1/services/{service}/releases/{version}/decisions", json=body, timeout=wait + 15)
    verdict = answer["verdict"]
    said = f"{answer['recorded']} by {answer['approver']} recorded ({answer['event_id']})"
    if verdict is None:
        print(said + ("" if wait <= 0 else f"; no verdict from the {env} gate within {wait:g} s"))
        return
    reasons = f" ({'; '.join(verdict['reasons'])})" if verdict["reasons"] else ""
    print(f"{said}; {env} gate for {service} {version}: {verdict['outcome']}{reasons}")


@app.command()
def rollback(service: str, env: EnvOpt, reason: Annotated[str | None, typer.Option(help="Why.")] = None,
             wait: WaitOpt = 60.0) -> None:
    """Return an environment to its last verified release (before the current one)."""
    answer = api.call("POST", f"/v1/services/{service}/rollbacks", json={"env": env, "reason": reason, "wait": wait},
                      timeout=wait + 15)
    outcome = answer["outcome"]
    if outcome is None:
        print(f"rollback requested by {answer['requested_by']} ({answer['event_id']})"
              + ("" if wait <= 0 else f"; not finished within {wait:g} s"))
        return
    if outcome["result"] == "failed":
        raise CliError(f"rollback of {service} in {env} failed: {outcome['reason']}")
    print(f"{service} in {env} is back on {outcome['version']} ({outcome['digest'][:15]}…)")


app.command("drift")(drift_command)


@app.command("build-completed")
def build_completed(
    service: Annotated[str, typer.Option(help="Service name, e.g. payments.")],
    version: Annotated[str, typer.Option(help="Version, e.g. 2.4.1.")],
    commit: Annotated[str, typer.Option(help="Source commit.")],
    author: Annotated[str, typer.Option(help="Who triggered the build (their identity, e.g. alice).")],
    file: Annotated[Path | None, typer.Option(help="The artifact file (digest computed here; copied into the "
                                                   "drop directory when outside it).",
                                              exists=True, dir_okay=False)] = None,
    uri: Annotated[str | None, typer.Option(help="The artifact URI, if not --file.")] = None,
    digest: Annotated[str | None, typer.Option(help="sha256:<hex>, required with --uri.")] = None,
    image: Annotated[str | None, typer.Option(help="An image, registry/repository:tag (or @sha256:…): its "
                                                    "manifest digest is asked of the registry (login `ci`).")] = None,
    check: Annotated[list[str], typer.Option(help="NAME=passed|failed, repeatable.")] = [],  # noqa: B006
) -> None:
    """Publish build.completed, as CI does after building an artifact once (Kafka principal `ci`)."""
    if sum(given is not None for given in (file, uri, image)) != 1 or (uri is not None and digest is None):
        raise CliError("give one of --file PATH, --image REGISTRY/REPOSITORY:TAG, or --uri URI with --digest "
                       "sha256:<hex>")
    import asyncio

    from cli import ops
    from shared.platform.settings import Settings

    checks = dict(_split_check(item) for item in check)
    settings = Settings()
    if image is not None:
        data = asyncio.run(ops.image_build_completed(settings, service, version, image, digest, commit, author,
                                                     checks))
    else:
        data = ops.build_completed(service, version, file, uri, digest, commit, author, checks)
    event = asyncio.run(ops.publish(settings, data))
    print(f"build.completed {service} {version} {event.data.artifact.digest} ({event.id})")


def _split_check(item: str) -> tuple[str, str]:
    name, _, result = item.partition("=")
    if result not in ("passed", "failed") or not name:
        raise CliError(f"--check {item!r}: expected NAME=passed or NAME=failed")
    return name, result


@app.command()
def evidence(service: str, version: str, env: EnvOpt,
             check: Annotated[str, typer.Option(help="The check's name, e.g. integration-tests.")],
             result: Annotated[str, typer.Option(help="passed or failed.")],
             digest: Annotated[str | None, typer.Option(help="Defaults to the registered digest (asked of the "
                                                             "API: needs a token).")] = None,
             url: Annotated[str | None, typer.Option(help="Link to the report.")] = None) -> None:
    """Publish evidence.recorded: a check's result for a release in an environment (Kafka principal `ci`)."""
    if result not in ("passed", "failed"):
        raise CliError(f"--result must be passed or failed, not {result!r}")
    if digest is None:
        digest = _registered_digest(service, version)
    import asyncio

    from cli import ops
    from shared.platform.settings import Settings

    event = asyncio.run(ops.publish(Settings(), ops.evidence(service, version, digest, env, check, result, url)))
    print(f"evidence {check}={result} for {service} {version} in {env} ({event.id})")


def _registered_digest(service: str, version: str) -> str:
    events = api.call("GET", f"/v1/services/{service}/releases/{version}/audit")["events"]
    registered = [e["event"]["data"]["digest"] for e in events if e["type"] == "artifact.registered"]
    if not registered:
        raise CliError(f"{service} {version} is not registered; pass --digest")
    return registered[0]


@pipeline_app.command("validate")
def pipeline_validate(file: Path) -> None:
    """Check a pipeline file; errors are listed as FILE:LINE:COLUMN: where: what."""
    from shared.contracts.pipeline import load_pipeline_file

    definition = load_pipeline_file(file)
    print(f"{file}: valid pipeline for {definition.service} "
          f"({' -> '.join(definition.environment_names)}), version {definition.content_hash[:19]}…")


@pipeline_app.command("apply")
def pipeline_apply(file: Path, prune: Annotated[bool, typer.Option(
        help="Also stop what runs in environments the new pipeline drops (refused without it).")] = False,
                   wait: WaitOpt = 30.0, as_json: JsonOpt = False) -> None:
    """Validate a pipeline file and apply it through the API (admin): versioned, audited, replayable."""
    from shared.contracts.pipeline import load_pipeline_file

    load_pipeline_file(file)  # the same errors, with their positions, before anything is sent
    answer = api.call("POST", "/v1/pipelines", json={"yaml": file.read_text(), "filename": str(file),
                                                     "prune": prune, "wait": wait}, timeout=wait + 15)
    if as_json:
        emit(answer)
        return
    print(f"pipeline for {answer['service']} applied by {answer['applied_by']}: version "
          f"{answer['pipeline_version']} ({answer['event_id']})")
    for pruned in answer["pruned"]:
        if pruned["stopped"] is None:
            print(f"  {pruned['env']}: pruning {pruned['version']}; not confirmed within {wait:g} s")
        else:
            print(f"  {pruned['env']}: pruned, {pruned['version']} stopped "
                  f"({', '.join(pruned['stopped']) or 'nothing was running'})")


@dlq_app.command("list")
def dlq_list(limit: Annotated[int, typer.Option(help="Show the last N dead letters.")] = 50,
             as_json: JsonOpt = False) -> None:
    """List the dead letters (the last N), oldest first."""
    letters = api.call("GET", "/v1/dead-letters", params={"limit": limit})["dead_letters"]
    if as_json:
        emit(letters)
        return
    if not letters:
        print("no dead letters on promotion.dlq")
    for letter in letters:
        source = letter["source"]
        print(f"{letter['id']}  {(letter['time'] or '?')[:19].replace('T', ' ')}  {letter['consumer']}  from "
              f"{source['topic']} {source['partition']}:{source['offset']}  {letter['size']} bytes")
        print(f"    reason   {letter['reason']}")
        preview = "".join(c if c.isprintable() else "·" for c in letter["value_text"][:72])
        print(f"    preview  {preview}{'…' if len(letter['value_text']) > 72 else ''}")


@dlq_app.command("replay")
def dlq_replay(letter_id: Annotated[str, typer.Argument(metavar="ID", help="PARTITION:OFFSET, as `promote dlq "
                                                                           "list` shows it.")]) -> None:
    """Resubmit a dead letter's original bytes, with its original key, to the topic it came from (admin)."""
    stored = api.call("POST", f"/v1/dead-letters/{letter_id}/replay")
    print(f"dead letter {letter_id} replayed to {stored['topic']} (partition {stored['partition']}, "
          f"offset {stored['offset']}) by {stored['replayed_by']}")


@token_app.command("create")
def token_create(subject: Annotated[str, typer.Argument(help="Who the token is for (an identity, e.g. bob).")],
                 role: Annotated[list[str], typer.Option(help="ROLE:ENV (viewer, promoter, approver, admin; ENV "
                                                              "or *), repeatable.")],
                 group: Annotated[list[str], typer.Option(help="A group the subject is in, repeatable.")] = [],  # noqa: B006
                 expires_in: Annotated[int | None, typer.Option(help="Seconds until it expires.")] = None,
                 as_json: JsonOpt = False) -> None:
    """Create an API token; it is printed once (only its hash is kept)."""
    made = api.call("POST", "/v1/tokens", json={"subject": subject, "roles": role, "groups": group,
                                                "expires_in_s": expires_in})
    emit(made) if as_json else print(made["token"])


@token_app.command("list")
def token_list(as_json: JsonOpt = False) -> None:
    """Every API token (without secrets)."""
    listed = api.call("GET", "/v1/tokens")["tokens"]
    if as_json:
        emit(listed)
        return
    for one in listed:
        state = "revoked" if one["revoked_at"] else "active"
        print(f"{one['id']}  {one['subject']:<16} {state:<8} {', '.join(one['roles'])}  by {one['created_by']}")


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Revoke an API token at once."""
    print(f"token {api.call('DELETE', f'/v1/tokens/{token_id}')['id']} revoked")


@stack_app.command("up")
def stack_up(services: Annotated[bool, typer.Option(help="Also start the services and the API.")] = True) -> None:
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
        print(f"wrote {path}")


class DemoArtifacts(str, enum.Enum):
    """What the demo's builds are."""

    image = "image"
    file = "file"


@app.command()
def demo(service: Annotated[str, typer.Option(help="Service name for the demo (a fresh one is picked "
                                                       "if it already has history).")] = "payments",
         artifacts: Annotated[DemoArtifacts, typer.Option(
             help="image: OCI images from the stack's registry, run as containers on podman; file: artifact "
                  "files run as local processes.")] = DemoArtifacts.image) -> None:
    """Run the walking-skeleton scenario on the local stack (./dev-stack demo starts the stack first)."""
    import asyncio

    from cli.demo import run_demo
    from shared.platform.settings import Settings

    asyncio.run(run_demo(Settings(), service, images=artifacts is DemoArtifacts.image))


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
    from cli.load import run_load

    report = run_load(url, rate, duration, count, path, concurrency)
    emit(report.as_dict()) if as_json else console().print(f"load: {report.summary()}", soft_wrap=True)


@app.command()
def replay(replace: Annotated[bool, typer.Option("--rebuild", help="Replace the live projections with the "
                                                                 "rebuilt ones (without it: only compare).")] = False,
           as_json: JsonOpt = False) -> None:
    """Rebuild the ledger's projections from the topics and compare them with the live ones (exit 1 if different);
    a drill run on the stack's host, as the ledger."""
    from cli.replay import replay as run_replay

    run_replay(replace, as_json)


def run() -> None:
    """Console entry point: errors become one line on stderr and a non-zero exit."""
    try:
        app(prog_name="promote")  # usage errors: typer prints them and exits 2
    except CliError as error:
        print(f"promote: error: {error}", file=sys.stderr)
        sys.exit(1)
    except Exception as error:  # noqa: BLE001 - every other failure is still one line
        print(_one_line(error), file=sys.stderr)
        sys.exit(1)


def _one_line(error: Exception) -> str:
    """The error as the CLI reports it: pipeline errors as they are, known failures with their reason."""
    from pydantic import ValidationError

    from shared.contracts import limits
    from shared.platform.client import BusUnavailable
    from shared.platform.credentials import MissingCredential
    from shared.contracts.pipeline import PipelineError

    if isinstance(error, PipelineError):
        return str(error)
    if isinstance(error, BusUnavailable | MissingCredential | TimeoutError | OSError):
        return f"promote: error: {error}"
    if isinstance(error, ValidationError):  # input past the limits (settings, event data): its first reason
        return f"promote: error: {limits.first_reason(error, located=False)}"
    return f"promote: unexpected error: {type(error).__name__}: {error}"


if __name__ == "__main__":
    run()
