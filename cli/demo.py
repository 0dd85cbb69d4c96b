"""The demo promotion (seed §10) on the local stack, step by step, with what happened at each step.

payments 2.4.0 and 2.4.1 are built once and published; each moves dev -> test -> staging
-> prod, staging waiting for integration-test evidence from test and prod for an approval
by someone who is not the author. A bad 2.4.2 fails verification in dev, which returns to
2.4.1 while prod is untouched; 2.4.1 re-published with other bytes is rejected.
"""

import asyncio
import sys
import time
from pathlib import Path

from rich.console import Console

from cli import ops, render
from cli.errors import CliError
from cli.ledger import LedgerReader
from shared.client import EventWatcher, Publisher, matches
from shared.events import ApprovalGranted, Event, EventData, EvidenceRecorded, new_event
from shared.pipeline import PipelineDefinition, load_pipeline_file
from shared.settings import REPO_ROOT, Settings

sys.path.insert(0, str(REPO_ROOT / "examples" / "payments"))
from build import build as build_artifact  # noqa: E402  (the example's own build script)

console = Console(highlight=False)
PIPELINE_FILE = REPO_ROOT / "examples" / "payments" / "pipeline.yaml"
STEP_TIMEOUT = 60.0


class Demo:
    """Publishes as CI and operators do, and waits for each outcome on the bus."""

    def __init__(self, settings: Settings, service: str, publisher: Publisher, watcher: EventWatcher) -> None:
        self.settings, self.service, self.publisher, self.watcher = settings, service, publisher, watcher
        self.dist = settings.var_dir / "demo" / service
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        console.print(f"[dim]{time.monotonic() - self.t0:6.1f}s[/]  {text}")

    async def send(self, data: EventData) -> Event:
        event = new_event(data, source="/promote/demo")
        await self.publisher.publish(event)
        return event

    async def wait(self, event_type: str, **fields) -> Event:
        with console.status(f"waiting for {event_type} {' '.join(str(v) for v in fields.values())}"):
            return await self.watcher.wait_for(matches(event_type, service=self.service, **fields),
                                               STEP_TIMEOUT, f"{event_type} {fields}")

    def build(self, version: str, *, bad: bool = False, label: str = "") -> tuple[Path, str]:
        path = self.dist / f"{self.service}-{version}{'-' + label if label else ''}.pyz"
        digest = build_artifact(version, path, bad=bad, label=label)
        self.say(f"CI built {self.service} {version}{' (bad build)' if bad else ''}{' ' + label if label else ''}: "
                 f"{render.short(digest)}")
        return path, digest

    async def publish_build(self, version: str, path: Path, digest: str, author: str) -> None:
        data = ops.build_completed(self.service, version, path, None, digest, "c0ffee" + version.replace(".", ""),
                                   author, {"unit-tests": "passed"})
        await self.send(data)
        self.say(f"CI published build.completed for {version} (author {author})")

    async def through_staging(self, version: str, digest: str) -> None:
        for env in ("dev", "test"):
            event = await self.wait("verification.passed", env=env, version=version)
            self.say(f"  {version} verified in [bold]{env}[/] (port {await self._port(env)}, "
                     f"checks {', '.join(k for k, v in event.data.checks.items() if v == 'passed')})")
        pending = await self.wait("gate.pending", env="staging", version=version)
        self.say(f"  staging gate holds {version}: {'; '.join(pending.data.reasons)}")
        await self.send(EvidenceRecorded(service=self.service, version=version, digest=digest, env="test",
                                         check="integration-tests", result="passed"))
        self.say("  test runner recorded evidence integration-tests=passed in test")
        await self.wait("verification.passed", env="staging", version=version)
        self.say(f"  {version} verified in [bold]staging[/]")

    async def approve_prod(self, version: str, author: str, approver: str) -> None:
        pending = await self.wait("gate.pending", env="prod", version=version)
        self.say(f"  prod gate holds {version}: {'; '.join(pending.data.reasons)}")
        if author:
            await self.send(ApprovalGranted(service=self.service, version=version, env="prod", approver=author))
            refused = await self.watcher.wait_for(
                lambda e: matches("gate.pending", service=self.service, env="prod", version=version)(e)
                and any("cannot approve" in r for r in e.data.reasons), STEP_TIMEOUT, "the author's refusal")
            self.say(f"  {author} (the author) approves: not counted — {'; '.join(refused.data.reasons)}")
        await self.send(ApprovalGranted(service=self.service, version=version, env="prod", approver=approver))
        await self.wait("gate.passed", env="prod", version=version)
        self.say(f"  {approver} approves: prod gate passed")
        await self.wait("verification.passed", env="prod", version=version)
        self.say(f"  {version} verified in [bold]prod[/]")

    async def _port(self, env: str) -> int | str:
        found = self.watcher.seen(matches("deployment.succeeded", service=self.service, env=env))
        return found[-1].data.port if found else "?"


async def run_demo(settings: Settings, service: str) -> None:
    """Run the whole scenario and end with the status table and where to look next."""
    service = await _fresh_service_name(settings, service)
    definition = load_pipeline_file(PIPELINE_FILE).model_copy(update={"service": service})
    definition = PipelineDefinition.model_validate(definition.model_dump(mode="json"))
    _write_secret(settings, definition)
    async with Publisher(settings.kafka_bootstrap) as publisher, EventWatcher(settings.kafka_bootstrap) as watcher:
        demo = Demo(settings, service, publisher, watcher)
        console.rule(f"[bold]promote demo: {service}")
        await demo.send(ops.pipeline_applied(definition, "demo"))
        demo.say(f"pipeline applied: {' -> '.join(definition.environment_names)} "
                 f"({definition.content_hash[:19]}…)")

        console.rule("1. the previous release, 2.4.0, goes all the way to prod")
        path, digest = demo.build("2.4.0")
        await demo.publish_build("2.4.0", path, digest, author="dana")
        await demo.through_staging("2.4.0", digest)
        await demo.approve_prod("2.4.0", author="", approver="erin")

        console.rule("2. 2.4.1: the same bytes from dev to prod, approval required")
        path, good = demo.build("2.4.1")
        await demo.publish_build("2.4.1", path, good, author="alice")
        await demo.through_staging("2.4.1", good)
        await demo.approve_prod("2.4.1", author="alice", approver="bob")

        console.rule("3. a bad 2.4.2 fails verification in dev and dev returns to 2.4.1")
        path, bad = demo.build("2.4.2", bad=True)
        await demo.publish_build("2.4.2", path, bad, author="carol")
        failed = await demo.wait("verification.failed", env="dev", version="2.4.2")
        demo.say(f"  [red]verification failed[/] in dev: {failed.data.reason}")
        ordered = await demo.wait("rollback.ordered", env="dev")
        demo.say(f"  rollback ordered: dev back to {ordered.data.version} (last verified release there)")
        done = await demo.wait("rollback.completed", env="dev")
        demo.say(f"  [green]rollback completed[/]: dev runs {done.data.version} ({render.short(done.data.digest)})")

        console.rule("4. 2.4.1 published again with other bytes is rejected")
        path, other = demo.build("2.4.1", label="rebuilt")
        await demo.publish_build("2.4.1", path, other, author="alice")
        rejected = await demo.wait("artifact.rejected", version="2.4.1")
        demo.say(f"  [red]artifact.rejected[/] ({rejected.data.reason}): {rejected.data.detail}")

    await _finish(settings, service, good)


async def _finish(settings: Settings, service: str, good: str) -> None:
    """Print the status table (from the ledger) and where to look next."""
    async with LedgerReader(settings) as ledger:
        # The ledger consumes the same events on its own; give it a bounded moment to catch up.
        deadline = time.monotonic() + 15
        while (status := await ledger.status(service))["environments"]["dev"]["version"] != "2.4.1" \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        checked, broken = await ledger.verify_chain()
    console.rule("status")
    console.print(render.status_table(status))
    prod = status["environments"]["prod"]
    if (prod["version"], prod["digest"]) != ("2.4.1", good):
        raise CliError(f"prod should run 2.4.1 {good}, the ledger says {prod['version']} {prod['digest']}")
    console.print(f"prod runs 2.4.1 with the digest that passed dev, test and staging; "
                  f"ledger hash chain: {checked} entries, {'intact' if broken is None else f'BROKEN at #{broken}'}")
    console.print(f"""
[bold]where to look next[/]
  .venv/bin/promote status {service}            what runs where (add --json for scripts)
  .venv/bin/promote history {service} --env dev the events of one environment
  .venv/bin/promote audit {service} 2.4.1       build -> gates -> approvals -> deployments, hash chain
  .venv/bin/promote rollback {service} --env prod --as you   back to 2.4.0
  ./dev-stack status                            processes, ports; logs in var/log/ (apps in var/log/apps/)
  docs/operator-guide.md                        everything an operator does""")


async def _fresh_service_name(settings: Settings, wanted: str) -> str:
    """`wanted`, or wanted-2, -3… when the stack already holds a demo run under that name."""
    try:
        async with LedgerReader(settings) as ledger:
            taken = set(await ledger.services())
    except CliError:
        taken = set()
    name, n = wanted, 1
    while name in taken:
        n += 1
        name = f"{wanted}-{n}"
    return name


def _write_secret(settings: Settings, definition: PipelineDefinition) -> None:
    """Put demo values into the local secret store for every secret the pipeline refers to."""
    for environment in definition.environments:
        for value in environment.model_dump(mode="json")["config"].values():
            if isinstance(value, dict):
                path = settings.secrets_dir / value["secret"]
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    path.write_text(f"demo-secret-for-{value['secret']}\n")
                    path.chmod(0o600)
