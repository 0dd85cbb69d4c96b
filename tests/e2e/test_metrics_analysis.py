"""Canary analysis from metrics: PromQL against the stack's real Prometheus, scraping the apps' /metrics.

The router's own analysis is set to let anything through (max_error_rate 1.0), so that the metric decides:
a good canary passes on its measured error rate, a faulty one (every second request a 500) is aborted by it,
and with Prometheus stopped the measurements are inconclusive and the canary pauses — never a pass — until
an operator resumes it with Prometheus back.
"""

import asyncio

import pytest

import devstack

from tests.e2e.support import promote_async
from tests.e2e.test_strategies import load, release, router_port, version_through

pytestmark = pytest.mark.e2e

SELECT = 'service="{{service}}",env="{{env}}",lane="{{lane}}"'
ERROR_RATE = (f'(sum(rate(app_requests_total{{{SELECT},code=~"5.."}}[5s])) or vector(0)) / '
              f'sum(rate(app_requests_total{{{SELECT}}}[5s]))')
PIPELINE = """
service: {service}
environments:
  - name: staging
    strategy:
      canary:
        steps: [20, 100]
        analysis:
          interval: 3s
          min_requests: 5
          max_error_rate: 1.0
          max_wait: 30s
          metrics:
            - name: error-rate
              query: 'QUERY'
              success: "result < 0.05"
              interval: 3s
              initial_delay: 6s
              count: 2
              inconclusive_limit: 1
    config: {{APP_ENV: staging}}
""".replace("QUERY", ERROR_RATE.replace("{", "{{").replace("}", "}}"))  # apply_pipeline formats {service}


async def test_a_good_canary_passes_on_its_measured_error_rate(scenario):
    await scenario.apply_pipeline(PIPELINE)
    await release(scenario, "1.0.0", "staging")
    port = await router_port(scenario, "staging")
    async with load(port) as report:
        passed = await release(scenario, "1.0.1", "staging")
        assert await version_through(port) == "1.0.1"
    measured = passed.data.checks["step_20_metric_error-rate"]
    print(f"\ngood canary, error-rate metric: {measured}")
    assert measured.endswith("passed (result < 0.05; last 0)") and " of 2 passed" in measured
    assert report.result().failed == 0


async def test_a_faulty_canary_is_aborted_by_its_error_rate_metric(scenario):
    await scenario.apply_pipeline(PIPELINE)
    await release(scenario, "1.0.0", "staging")
    port = await router_port(scenario, "staging")
    async with load(port):
        failed = await release(scenario, "1.0.1", "staging", faulty=True, outcome="verification.failed")
        await scenario.wait("rollback.completed", env="staging", timeout=60)
        assert await version_through(port) == "1.0.0"
    print(f"\nfaulty canary: {failed.data.reason}")
    assert failed.data.reason.startswith("canary analysis at 20% of traffic: metric error-rate: 1 of ")
    value = float(failed.data.reason.rsplit("last ", 1)[1].rstrip(")"))
    assert 0.3 < value < 0.7, "every second request of a faulty build fails"


async def test_with_prometheus_unreachable_a_canary_pauses_inconclusive_and_an_operator_resumes_it(scenario):
    await scenario.apply_pipeline(PIPELINE)
    await release(scenario, "1.0.0", "staging")
    port = await router_port(scenario, "staging")
    await asyncio.to_thread(devstack.prometheus.stop)
    try:
        async with load(port) as report:
            path, digest = scenario.build("1.0.1")
            await scenario.send(scenario.build_completed("1.0.1", path, digest))
            paused = await scenario.wait("deployment.progressed", env="staging", version="1.0.1", state="paused",
                                         timeout=60)
            assert scenario.seen("verification.passed", version="1.0.1") == [], "inconclusive is never a pass"
            await asyncio.to_thread(devstack.prometheus.up)
            resumed = await promote_async("canary", "resume", scenario.service, "--env", "staging")
            assert resumed.returncode == 0, resumed.stderr
            passed = await scenario.wait("verification.passed", env="staging", version="1.0.1", timeout=60)
    finally:
        await asyncio.to_thread(devstack.prometheus.up)
    print(f"\nprometheus down: {paused.data.checks['paused_because']}")
    assert paused.data.by is None and paused.data.share == 20
    assert paused.data.checks["paused_because"].startswith("metric error-rate inconclusive: Prometheus at ")
    assert "did not answer" in paused.data.checks["paused_because"]
    assert passed.data.checks["step_20_metric_error-rate"].endswith("(result < 0.05; last 0)")
    assert report.result().failed == 0
