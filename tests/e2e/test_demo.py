"""The README's first command ends in the demo: run it and check what it shows, on images and on files."""

import uuid

import pytest

from tests.e2e.support import promote

pytestmark = pytest.mark.e2e

SHOWN = ("alice (the author) approves with their own token: refused: you are the author of this release (alice)",
         "bob approves: prod gate passed", "2.4.1 verified in prod",
         "verification failed in dev: health: GET /health answered 500", "rollback completed: dev runs 2.4.1",
         "canary aborted at 10% of the traffic", "all traffic back on 2.4.1; rollback completed in staging",
         "one digest, two behaviours: GET / answers ui=new in staging, ui=classic in prod",
         "GET / in prod now answers ui=new", "artifact.rejected (immutability-violation)",
         "prod runs 2.4.1 with the digest that passed dev, test and staging",
         "evidence bundle of prod: var/demo/demo-", "verified offline against the ledger's checkpoint")


def run(*args: str) -> str:
    result = promote("demo", "--service", f"demo-{uuid.uuid4().hex[:8]}", *args, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for line in SHOWN:
        assert line in out, f"missing: {line}"
    assert out.index("2.4.1 verified in prod") < out.index("verification failed in dev")
    assert "canary analysis in staging passed at each step (10%" in out
    return out


def test_the_demo_promotes_images_through_containers_and_reports_the_moved_tag(stack):
    out = run()
    assert "CI built the demo-" in out and "image and pushed it to" in out
    assert "2 of 2 verified containers" in out  # prod: two replicas behind the router
    assert "reported (artifact.tag_moved); prod keeps running" in out
    assert "CI signed it with cosign (key ci-release) and attested its SLSA provenance" in out
    assert "gates held again from the bundle: prod: ci-release, prod: provenance by ci-release" in out
    assert "approved by prod: bob (release-managers)" in out


def test_the_demo_runs_on_artifact_files_and_local_processes_too(stack):
    out = run("--artifacts", "file")
    assert "pushed it to" not in out and "tag_moved" not in out and "verified in prod (blue/green" in out
    assert "signed it with cosign" not in out
