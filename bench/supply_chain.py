"""The cost of signature and provenance checks per promotion, against the same promotion without them, same run.

N small images are pushed to the stack's registry as CI; half are signed and attested with the real cosign (CI's
key ci-release: its signing time is CI's, not counted) and promoted into an environment with a signed_by and a
provenance gate; the other half are neither, into an environment without those gates. One build at a time,
alternating, so both see the same stack. Each is timed as the observer sees the events:

  intake   build.completed     -> artifact.registered   (the registry checks, and now the .sig/.att fetches)
  gates    artifact.registered -> gate.passed (dev)      (gates hears of it, and judges the signature and provenance)

In the same run, in this process, on the same images: `check` (what intake did before: the manifest and its
blobs) against `check + collect` (what it does now: and the signatures and attestations), and the CPU time of
gates' two judgements (shared.signatures.judge, shared.attestations.judge_provenance) on the collected bytes.

    .venv/bin/python -m bench.supply_chain --images 40 --json /tmp/supply-chain.json
"""

import argparse
import asyncio
import base64
import hashlib
import json
import time
import uuid

from rich.table import Table

from bench import common
from bench.common import console
from services.intake.supply_chain import collect
from shared.attestations import judge_provenance
from shared.platform.client import Publisher
from shared.contracts.events import Artifact, BuildCompleted, new_event
from shared.oci import OCI_MANIFEST, Registry, image_manifest, parse_reference
from shared.contracts.pipeline import parse_pipeline
from shared.signature_keys import TrustedKey
from shared.signatures import Signature, judge

BUILDER, SOURCE = "https://promote.example/bench-ci", "https://git.example/acme/bench"
GATED = """service: {service}
artifact: {{kind: oci}}
environments:
  - name: dev
    driver: noop
    gates: [{{signed_by: [ci-release]}}, {{provenance: {{builder: "%s", source: "%s"}}}}]
""" % (BUILDER, SOURCE)
PLAIN = "service: {service}\nartifact: {{kind: oci}}\nenvironments:\n  - {{name: dev, driver: noop}}\n"
STAGES = ("build.completed", "artifact.registered", "gate.passed")


async def push_small(registry: Registry, service: str) -> str:
    """A one-layer image of its own bytes under service:1.0.0; registry/service@digest."""
    ref = parse_reference(f"{common.SETTINGS.registry}/{service}:1.0.0")
    config, layer = b'{"architecture":"amd64","os":"linux","config":{}}', uuid.uuid4().bytes * 64
    for blob in (config, layer):
        await registry.push_blob(ref, blob)
    digest = await registry.push_manifest(ref, image_manifest(config, [(layer, "application/vnd.oci.image.layer.v1.tar")]),
                                          OCI_MANIFEST)
    return f"{ref.name}@{digest}"


def commit_of(service: str) -> str:
    return hashlib.sha1(service.encode()).hexdigest()


async def measure(count: int, timeout: float) -> dict:
    from cli.ops import pipeline_applied
    from devstack.cosign import CI, slsa_provenance

    rid = common.run_id("sc")
    services = {kind: [f"bsc-{rid}-{kind}-{i:03d}" for i in range(count // 2)] for kind in ("gated", "plain")}
    ci = await asyncio.to_thread(CI, common.SETTINGS)
    images: dict[str, str] = {}
    async with Registry.from_settings(common.SETTINGS, "ci") as registry:
        with console.status(f"pushing {count} images, signing and attesting half of them with cosign"):
            for kind, names in services.items():
                for service in names:
                    images[service] = await push_small(registry, service)
                    if kind == "gated":
                        await asyncio.to_thread(ci.sign, images[service])
                        await asyncio.to_thread(ci.attest, images[service],
                                                slsa_provenance(BUILDER, SOURCE, commit_of(service)))
    mine = rid.encode()
    hops: dict[str, list[dict[str, float]]] = {"gated": [], "plain": []}
    async with Publisher(common.SETTINGS) as publisher, \
            common.Observer(common.LIVE_TOPICS, keep=lambda r: r if mine in r.value else None) as observer:
        for kind, names in services.items():
            for service in names:
                text = (GATED if kind == "gated" else PLAIN).format(service=service)
                await publisher.publish(new_event(pipeline_applied(parse_pipeline(text), "bench"), source="/bench"))
        await common.wait_pipelines([name for names in services.values() for name in names])
        for gated, plain in zip(services["gated"], services["plain"]):
            for kind, service in (("gated", gated), ("plain", plain)):
                ref = parse_reference(images[service])
                build = BuildCompleted(service=service, version="1.0.0", commit=commit_of(service), author="ci",
                                       checks={}, artifact=Artifact(kind="oci", uri=f"{ref.name}:1.0.0",
                                                                    digest=ref.digest))
                await publisher.publish(new_event(build, source="/bench"))
                hops[kind].append(await _hop(observer, service, timeout))
    figures = {kind: {"intake": common.percentiles([h["artifact.registered"] for h in rows]),
                      "gates": common.percentiles([h["gate.passed"] - h["artifact.registered"] for h in rows]),
                      "total": common.percentiles([h["gate.passed"] for h in rows])}
               for kind, rows in hops.items()}
    figures["in_process"] = await _in_process([images[s] for s in services["gated"]], ci)
    return figures


async def _hop(observer: common.Observer, service: str, timeout: float) -> dict[str, float]:
    deadline, seen, parsed = time.monotonic() + timeout, {}, 0
    while time.monotonic() < deadline:
        for at, record in observer.seen[parsed:]:
            body = json.loads(record.value)
            if body["data"]["service"] != service:
                continue
            if body["type"] in STAGES:
                seen.setdefault(body["type"], at)
            elif body["type"] in ("gate.failed", "artifact.rejected"):
                raise RuntimeError(f"{service}: {body['type']}: {body['data']}")
        parsed = len(observer.seen)
        if len(seen) == len(STAGES):
            return {stage: (seen[stage] - seen[STAGES[0]]) * 1000 for stage in STAGES[1:]}
        await asyncio.sleep(0.002)
    raise TimeoutError(f"{service}: no gate.passed within {timeout:.0f} s")


async def _in_process(images: list[str], ci) -> dict:
    """check vs check + collect (ms per image), and the CPU time of the two judgements (ms per call)."""
    key = TrustedKey.from_pem("ci-release", ci.public.read_bytes())
    before, after, signature_ms, provenance_ms = [], [], [], []
    async with Registry.from_settings(common.SETTINGS, "intake") as registry:
        for image in images:
            ref = parse_reference(image)
            t0 = time.perf_counter()
            await registry.check(ref, expected=ref.digest)
            before.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            await registry.check(ref, expected=ref.digest)
            found = await collect(registry, ref)
            after.append((time.perf_counter() - t0) * 1000)
            signatures = [Signature(base64.b64decode(s.payload), s.signature) for s in found.signatures]
            envelopes = [base64.b64decode(a) for a in found.attestations]
            service = ref.repository
            for _ in range(20):
                t0 = time.perf_counter()
                judge(image, ref.digest, found.signatures_manifest, signatures, [key])
                signature_ms.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                judge_provenance(envelopes, ref.digest, [key], builder=BUILDER, source=SOURCE,
                                 commit=commit_of(service))
                provenance_ms.append((time.perf_counter() - t0) * 1000)
    return {"check_ms": common.percentiles(before), "check_and_collect_ms": common.percentiles(after),
            "judge_signature_ms": common.percentiles(signature_ms),
            "judge_provenance_ms": common.percentiles(provenance_ms)}


def show(result: dict) -> None:
    table = Table(title=f"supply-chain checks per promotion, ms ({result['images']} images)")
    for column in ("what", "n", "p50", "p95", "p99", "max"):
        table.add_column(column, justify="left" if column == "what" else "right")
    figures = result["figures"]
    rows = [(f"{kind}: {hop}", figures[kind][hop]) for kind in ("plain", "gated") for hop in ("intake", "gates", "total")]
    rows += [(f"in process: {name}", values) for name, values in figures["in_process"].items()]
    for name, values in rows:
        table.add_row(name, *(str(values[key]) for key in ("n", "p50", "p95", "p99", "max")))
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--images", type=int, default=40, help="images to promote, half gated (default 40)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one promotion")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    common.up()
    result = {"machine": common.machine(), "images": args.images,
              "figures": asyncio.run(measure(args.images, args.timeout))}
    show(result)
    common.write_json(args.json, result)


if __name__ == "__main__":
    main()
