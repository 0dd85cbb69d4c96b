"""The README's first command ends in the demo: run it and check what it shows."""

import uuid

import pytest

from tests.e2e.support import promote

pytestmark = pytest.mark.e2e


def test_the_demo_promotes_rolls_back_rejects_and_ends_with_prod_on_the_good_release(stack):
    result = promote("demo", "--service", f"demo-{uuid.uuid4().hex[:8]}", timeout=240)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for line in ("alice (the author) approves with their own token: refused: you are the author of this release "
                 "(alice)", "bob approves: prod gate passed",
                 "2.4.1 verified in prod", "verification failed in dev: health: GET /health answered 500",
                 "rollback completed: dev runs 2.4.1", "canary aborted at 10% of the traffic",
                 "all traffic back on 2.4.1; rollback completed in staging",
                 "one digest, two behaviours: GET / answers ui=new in staging, ui=classic in prod",
                 "GET / in prod now answers ui=new", "artifact.rejected (immutability-violation)",
                 "prod runs 2.4.1 with the digest that passed dev, test and staging"):
        assert line in out, f"missing: {line}"
    assert out.index("2.4.1 verified in prod") < out.index("verification failed in dev")
    assert "canary analysis in staging passed at each step (10%" in out
