"""The demo promotion (seed §10) on the local stack, step by step, with what happened at each step.

payments 2.4.0 and 2.4.1 are built once and published; each moves dev -> test -> staging
-> prod, staging waiting for integration-test evidence from test (and entering as a canary
under real traffic) and prod for an approval by someone who is not the author (and entering
blue/green). A bad 2.4.2 fails verification in dev, which returns to 2.4.1 while prod is
untouched; a faulty 2.4.3 passes dev and test and is caught by the canary analysis in staging
after a small share of traffic; a flag change redeploys prod's digest with its new config;
2.4.1 re-published with other bytes is rejected.

By default every build is an OCI image (built from source by examples/payments/build_image.py, pushed to
the stack's registry as CI) and runs as containers on podman, prod as two replicas behind the router; the
rebuilt 2.4.1 is pushed under the same tag, which intake reports moved while prod keeps its digest.
`--artifacts file` runs the same scenario with artifact files as local processes.
"""

import asyncio
import hashlib
import json
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console

from cli import api, render
from cli.errors import CliError
from shared.platform.client import EventWatcher, Publisher, matches
from shared.contracts.events import Artifact, BuildCompleted, Event, EventData, EvidenceRecorded, new_event
from shared.loadgen import LoadReport, generate
from shared.contracts.pipeline import PipelineDefinition, load_pipeline_file, parse_pipeline
from shared.platform.settings import REPO_ROOT, Settings

sys.path.insert(0, str(REPO_ROOT / "examples" / "payments"))
from build import build as build_artifact  # noqa: E402  (the example's own build script)
from build_image import build_image, push  # noqa: E402  (and its image build)

console = Console(highlight=False)
BUILDER = "https://promote.example/demo-ci"
SOURCE = "https://git.example/acme/payments"
"""The builder and repository prod's provenance gate names (examples/payments/pipeline.yaml)."""


def commit_of(version: str) -> str:
    """The (made-up, full) source commit of a version's build, as CI states it and its provenance attests it."""
    return hashlib.sha1(f"payments {version}".encode()).hexdigest()
PIPELINE_FILE = REPO_ROOT / "examples" / "payments" / "pipeline.yaml"
STEP_TIMEOUT = 60.0
TRAFFIC_RATE, TRAFFIC_SECONDS = 50.0, 600.0


class Operators:
    """The demo's people at the operator API: the stack's first admin creates a token for each one it needs."""

    def __init__(self) -> None:
        from devstack import admin_token_file  # the demo runs on the stack's host

        path = admin_token_file()
        try:
            self.admin = path.read_text().strip()
        except OSError:
            raise CliError(f"no admin token at {path}: is the API up? ./dev-stack up") from None
        self._tokens: dict[str, str] = {}

    async def call(self, who: str, method: str, path: str, **kwargs) -> dict:
        """A request to the API as `who` ("admin": the first admin)."""
        token = self.admin if who == "admin" else await self._token(who)
        return await asyncio.to_thread(api.call, method, path, bearer=token, **kwargs)

    async def _token(self, who: str) -> str:
        if who not in self._tokens:
            made = await asyncio.to_thread(api.call, "POST", "/v1/tokens", bearer=self.admin,
                                           json={"subject": who, "roles": ["approver:*"], "groups": ["release-managers"],
                                                 "expires_in_s": 3600})
            self._tokens[who] = made["token"]
        return self._tokens[who]

    async def apply(self, definition: PipelineDefinition) -> dict:
        """Apply a pipeline as the admin (its JSON dump is valid YAML, and a valid pipeline)."""
        body = {"yaml": json.dumps(definition.model_dump(mode="json")), "filename": "demo-pipeline.json"}
        return await self.call("admin", "POST", "/v1/pipelines", json=body)


class Demo:
    """Publishes as CI does, acts as operators do (through the API), and waits for each outcome on the bus."""

    def __init__(self, settings: Settings, service: str, publisher: Publisher, watcher: EventWatcher,
                 operators: Operators, images: bool = True) -> None:
        self.settings, self.service, self.publisher, self.watcher = settings, service, publisher, watcher
        self.operators, self.images = operators, images
        self.dist = settings.drop_dir / "demo" / service  # intake takes artifacts only from its roots
        self.t0 = time.monotonic()
        self.traffic: asyncio.Task[LoadReport] | None = None
        self.stop_traffic = asyncio.Event()
        self.ci = None  # devstack.cosign.CI, made at the first image

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

    async def build(self, version: str, *, bad: bool = False, faulty: bool = False,
                    label: str = "") -> tuple[str, str]:
        """CI's build: an image pushed under the tag `version` (or a file in the drop folder); (where, digest)."""
        kind = " (bad build)" if bad else " (fails half its requests, healthy otherwise)" if faulty else ""
        if self.images:
            with console.status(f"building the {version} image from source"):
                image = await asyncio.to_thread(build_image, version, bad=bad, faulty=faulty, label=label)
            where = f"{self.settings.registry}/{self.service}:{version}"
            digest = await push(image, where, self.settings)
            self.say(f"CI built the {self.service} {version} image{kind}{' ' + label if label else ''} and pushed "
                     f"it to {where}: {render.short(digest)}")
            await self.sign(where.rsplit(":", 1)[0] + "@" + digest, version)
            return where, digest
        path = self.dist / f"{self.service}-{version}{'-' + label if label else ''}.pyz"
        digest = build_artifact(version, path, bad=bad, faulty=faulty, label=label)
        self.say(f"CI built {self.service} {version}{kind}{' ' + label if label else ''}: {render.short(digest)}")
        return path.as_uri(), digest

    async def sign(self, image: str, version: str) -> None:
        """CI signs the image and attests its SLSA provenance with cosign (key ci-release), before publishing."""
        from devstack.cosign import CI, slsa_provenance

        if self.ci is None:
            with console.status("CI's cosign: built from source once per machine (about 6 minutes the first time)"):
                self.ci = await asyncio.to_thread(CI, self.settings)
        await asyncio.to_thread(self.ci.sign, image)
        await asyncio.to_thread(self.ci.attest, image, slsa_provenance(BUILDER, SOURCE, commit_of(version)))
        self.say(f"  CI signed it with cosign (key {self.ci.key_id}) and attested its SLSA provenance "
                 f"(builder {BUILDER}, commit {commit_of(version)[:12]}…)")

    def start_traffic(self, env: str, port: int) -> None:
        """Users: steady loopback traffic through the environment's router for the rest of the demo."""
        self.traffic = asyncio.create_task(generate(f"http://127.0.0.1:{port}", rate=TRAFFIC_RATE,
                                                    duration=TRAFFIC_SECONDS, stop=self.stop_traffic))
        self.say(f"  users start sending {TRAFFIC_RATE:.0f} requests/s to {env} through its router (:{port})")

    async def end_traffic(self) -> LoadReport | None:
        if self.traffic is None:
            return None
        self.stop_traffic.set()
        return await self.traffic

    async def publish_build(self, version: str, where: str, digest: str, author: str) -> None:
        data = BuildCompleted(service=self.service, version=version,
                              artifact=Artifact(kind="oci" if self.images else "file", uri=where, digest=digest),
                              commit=commit_of(version), author=author,
                              checks={"unit-tests": "passed"})
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
        verified = await self.wait("verification.passed", env="staging", version=version)
        steps = [int(key.split("_")[1]) for key in verified.data.checks if key.endswith("_requests")]
        if steps:
            figures = ", ".join(f"{share}%: {verified.data.checks[f'step_{share}_requests']} requests, "
                                f"error rate {float(verified.data.checks[f'step_{share}_error_rate']):.1%}"
                                for share in steps)
            self.say(f"  canary analysis in staging passed at each step ({figures}); 100% on {version}")
        self.say(f"  {version} verified in [bold]staging[/]")
        if self.traffic is None:
            self.start_traffic("staging", await self._port("staging"))

    async def approve_prod(self, version: str, author: str, approver: str) -> None:
        pending = await self.wait("gate.pending", env="prod", version=version)
        self.say(f"  prod gate holds {version}: {'; '.join(pending.data.reasons)}")
        decisions = f"/v1/services/{self.service}/releases/{version}/decisions"
        if author:
            try:
                await self.operators.call(author, "POST", decisions, json={"env": "prod", "decision": "granted"})
                raise CliError(f"the API let {author}, the author, approve {version}")
            except CliError as refused:
                self.say(f"  {author} (the author) approves with their own token: {refused}")
        answer = await self.operators.call(approver, "POST", decisions, json={"env": "prod", "decision": "granted"},
                                           timeout=STEP_TIMEOUT)
        if (answer["verdict"] or {}).get("outcome") != "passed":
            await self.wait("gate.passed", env="prod", version=version)
        self.say(f"  {approver} approves: prod gate passed (approver recorded: {answer['approver']}, from the token)")
        verified = await self.wait("verification.passed", env="prod", version=version)
        replicas = f"; {verified.data.checks['replicas']} containers" if "replicas" in verified.data.checks else ""
        self.say(f"  {version} verified in [bold]prod[/] (blue/green: {verified.data.checks.get('switch', '')}"
                 f"{replicas})")

    async def _port(self, env: str) -> int | str:
        found = self.watcher.seen(matches("deployment.succeeded", service=self.service, env=env))
        return found[-1].data.port if found else "?"


async def run_demo(settings: Settings, service: str, images: bool = True) -> None:
    """Run the whole scenario and end with the status table and where to look next."""
    operators = Operators()
    service = await _fresh_service_name(operators, service)
    definition = _pipeline_for(service)
    if not images:
        definition = as_files(definition)
    definition = PipelineDefinition.model_validate(definition.model_dump(mode="json"))
    _write_secret(settings, definition)
    async with Publisher(settings) as publisher, EventWatcher(settings) as watcher:
        demo = Demo(settings, service, publisher, watcher, operators, images)
        console.rule(f"[bold]promote demo: {service}")
        await operators.apply(definition)
        demo.say(f"pipeline applied: {' -> '.join(definition.environment_names)} "
                 f"({definition.content_hash[:19]}…)")

        console.rule("1. the previous release, 2.4.0, goes all the way to prod")
        path, digest = await demo.build("2.4.0")
        await demo.publish_build("2.4.0", path, digest, author="dana")
        await demo.through_staging("2.4.0", digest)
        await demo.approve_prod("2.4.0", author="", approver="erin")

        console.rule("2. 2.4.1: the same bytes from dev to prod, approval required")
        path, good = await demo.build("2.4.1")
        await demo.publish_build("2.4.1", path, good, author="alice")
        await demo.through_staging("2.4.1", good)
        await demo.approve_prod("2.4.1", author="alice", approver="bob")

        console.rule("3. a bad 2.4.2 fails verification in dev and dev returns to 2.4.1")
        path, bad = await demo.build("2.4.2", bad=True)
        await demo.publish_build("2.4.2", path, bad, author="carol")
        failed = await demo.wait("verification.failed", env="dev", version="2.4.2")
        demo.say(f"  [red]verification failed[/] in dev: {failed.data.reason}")
        ordered = await demo.wait("rollback.ordered", env="dev")
        demo.say(f"  rollback ordered: dev back to {ordered.data.version} (last verified release there)")
        done = await demo.wait("rollback.completed", env="dev")
        demo.say(f"  [green]rollback completed[/]: dev runs {done.data.version} ({render.short(done.data.digest)})")

        console.rule("4. a faulty 2.4.3 passes dev and test; the canary analysis catches it in staging")
        path, faulty = await demo.build("2.4.3", faulty=True)
        await demo.publish_build("2.4.3", path, faulty, author="carol")
        for env in ("dev", "test"):
            await demo.wait("verification.passed", env=env, version="2.4.3")
            demo.say(f"  2.4.3 verified in {env} (/health and /version answer well)")
        await demo.wait("gate.pending", env="staging", version="2.4.3")
        await demo.send(EvidenceRecorded(service=service, version="2.4.3", digest=faulty, env="test",
                                         check="integration-tests", result="passed"))
        caught = await demo.wait("verification.failed", env="staging", version="2.4.3")
        checks = caught.data.checks
        demo.say(f"  [red]canary aborted[/] at {checks['aborted_at_share']} of the traffic: {checks['errors']} of "
                 f"{checks['requests']} canary requests failed (error rate {float(checks['error_rate']):.1%}, "
                 f"p99 {checks['p99_ms']} ms; the pipeline allows {definition.environment('staging').strategy.analysis.max_error_rate:.0%})")
        done = await demo.wait("rollback.completed", env="staging")
        demo.say(f"  all traffic back on {done.data.version}; [green]rollback completed[/] in staging")
        users = await demo.end_traffic()
        if users is not None:
            demo.say(f"  users sent {users.sent} requests to staging during the demo: {users.failed} failed "
                     f"({users.failed / max(users.sent, 1):.2%}); only the faulty canary answers errors, and it "
                     "never had more than its first step's share")

        console.rule("5. a feature flag turned on in prod: the same digest, redeployed with the new config")
        before = await _ui(await demo._port("staging")), await _ui(await demo._port("prod"))
        demo.say(f"  one digest, two behaviours: GET / answers ui={before[0]} in staging, ui={before[1]} in prod")
        flagged = _with_prod_flag(definition, "true")
        await operators.apply(flagged)
        demo.say("  pipeline applied with FEATURE_NEW_UI=true in prod (an audited config change)")
        redeployed = await demo.wait("verification.passed", env="prod", purpose="reconfigure")
        demo.say(f"  prod redeployed {redeployed.data.version} {render.short(redeployed.data.digest)} with config "
                 f"{render.short(redeployed.data.config_version)} ({redeployed.data.checks.get('switch', '')})")
        demo.say(f"  GET / in prod now answers ui={await _ui(await demo._port('prod'))}")

        console.rule("6. 2.4.1 published again with other bytes is rejected")
        path, other = await demo.build("2.4.1", label="rebuilt")
        await demo.publish_build("2.4.1", path, other, author="alice")
        rejected = await demo.wait("artifact.rejected", version="2.4.1")
        demo.say(f"  [red]artifact.rejected[/] ({rejected.data.reason}): {rejected.data.detail}")
        if images:
            moved = await demo.wait("artifact.tag_moved", version="2.4.1")
            demo.say(f"  the tag {moved.data.tag} now names {render.short(moved.data.moved_to)}: reported "
                     f"(artifact.tag_moved); prod keeps running {render.short(moved.data.digest)}")

    await _finish(operators, service, good, redeployed.data.config_version, images)


async def _finish(operators: Operators, service: str, good: str, prod_config: str, images: bool) -> None:
    """Print the status table (from the ledger, through the API) and where to look next."""
    async def status() -> dict:
        return (await operators.call("admin", "GET", "/v1/status", params={"service": service}))["services"][0]

    # The ledger consumes the same events on its own; give it a bounded moment to catch up.
    deadline = time.monotonic() + 15
    while (now := await status())["environments"]["prod"]["config_version"] != prod_config \
            and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    chain = await operators.call("admin", "GET", "/v1/ledger/chain")
    checked, broken = chain["entries"], chain["first_broken_seq"]
    status = now
    console.rule("status")
    console.print(render.status_table(status))
    prod = status["environments"]["prod"]
    if (prod["version"], prod["digest"]) != ("2.4.1", good):
        raise CliError(f"prod should run 2.4.1 {good}, the ledger says {prod['version']} {prod['digest']}")
    console.print(f"prod runs 2.4.1 with the digest that passed dev, test and staging; "
                  f"ledger hash chain: {checked} entries, {'intact' if broken is None else f'BROKEN at #{broken}'}")
    bundle = await _prove(operators, service)
    console.print(f"""
[bold]where to look next[/]
  .venv/bin/promote status {service}            what runs where (add --json for scripts)
  .venv/bin/promote history {service} --env dev the events of one environment
  .venv/bin/promote audit {service} 2.4.1       build -> gates -> approvals -> deployments, hash chain
  .venv/bin/promote verify-bundle {bundle} --keys var/keys/ledger.pub --keys var/keys/trusted
                                                what justifies prod, checked offline with public keys only
  .venv/bin/promote token create you --role promoter:prod    a token (then: promote login)
  .venv/bin/promote rollback {service} --env prod            a blue/green switch back, as you
  ./dev-stack status                            processes, ports; logs in var/log/ (apps in var/log/apps/)""")
    if images:
        console.print(f"  ./dev-stack podman ps --filter label=promote.service={service}   its containers, by lane")
    console.print("  docs/operator-guide.md                        everything an operator does")


async def _prove(operators: Operators, service: str) -> str:
    """Export prod's evidence bundle and check it offline, as an auditor would; the bundle's path."""
    from shared.bundle import verify
    from shared.signature_keys import TrustedKey

    settings = Settings()
    with console.status("waiting for the ledger's next signed checkpoint"):
        bundle = await operators.call("admin", "GET", f"/v1/services/{service}/environments/prod/bundle",
                                      again_for=30.0, timeout=120.0)
    path = settings.var_dir / "demo" / f"{service}-prod.bundle.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bundle, indent=1, sort_keys=True))
    keys = {file.stem: TrustedKey.from_pem(file.stem, file.read_bytes())
            for file in [settings.var_dir / "keys" / "ledger.pub", *settings.trusted_keys_dir.glob("*.pub")]}
    verified = verify(bundle, keys)
    relative = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    console.print(f"evidence bundle of prod: {relative} ({len(bundle['entries'])} ledger entries); verified "
                  f"offline against the ledger's checkpoint {verified.checkpoint['size']}")
    if verified.supply_chain:
        console.print(f"  gates held again from the bundle: {', '.join(verified.supply_chain)}")
    if verified.approvals:
        console.print(f"  approved by {', '.join(verified.approvals)}")
    return str(relative)


def as_files(definition: PipelineDefinition) -> PipelineDefinition:
    """The same pipeline for artifact files run as local processes (one per lane: no replicas, no limits, and no
    signature or provenance gates: cosign signs images)."""
    dumped = definition.model_dump(mode="json")
    dumped["artifact"]["kind"] = "file"
    for environment in dumped["environments"]:
        environment.update(driver="local", replicas=1, resources=None)
        environment["gates"] = [gate for gate in environment["gates"]
                                if not {"signed_by", "provenance"} & set(gate)]
    return PipelineDefinition.model_validate(dumped)


def _with_prod_flag(definition: PipelineDefinition, value: str) -> PipelineDefinition:
    """The same pipeline with FEATURE_NEW_UI set to `value` in prod."""
    dumped = definition.model_dump(mode="json")
    for environment in dumped["environments"]:
        if environment["name"] == "prod":
            environment["config"]["FEATURE_NEW_UI"] = value
    return PipelineDefinition.model_validate(dumped)


async def _ui(port: int | str) -> str:
    """What the app's page shows (the feature flag at work)."""
    async with httpx.AsyncClient(timeout=3.0) as client:
        return (await client.get(f"http://127.0.0.1:{port}/")).json().get("ui", "?")


async def _fresh_service_name(operators: Operators, wanted: str) -> str:
    """`wanted`, or wanted-2, -3… when the stack already holds a demo run under that name."""
    try:
        taken = {one["service"] for one in (await operators.call("admin", "GET", "/v1/status"))["services"]}
    except CliError:
        taken = set()
    name, n = wanted, 1
    while name in taken:
        n += 1
        name = f"{wanted}-{n}"
    return name


def _pipeline_for(service: str) -> PipelineDefinition:
    """The example pipeline for `service`: its name and its secret references (a service's own: `<service>/…`)."""
    example = load_pipeline_file(PIPELINE_FILE)
    if service == example.service:
        return example
    text = PIPELINE_FILE.read_text().replace(f"service: {example.service}\n", f"service: {service}\n")
    return parse_pipeline(text.replace(f"{{secret: {example.service}/", f"{{secret: {service}/"), str(PIPELINE_FILE))


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
