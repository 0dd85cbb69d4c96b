"""Builds the deployer service's FastStream app from settings (no work at import)."""

from faststream import FastStream

from services.deployer.container import ContainerDriver
from services.deployer.driver import LocalDriver
from services.deployer.handlers import DeployerHandlers
from services.deployer import recovery
from services.deployer.noop import NoopDriver
from services.deployer.router import Router
from shared.contracts import topics
from shared.platform.consumer import environment_lane
from shared.contracts.events import (DeploymentFailed, DeploymentProgressed, DeploymentStarted, DeploymentSucceeded,
                           DriftChecked, DriftDetected, DriftResolved, EnvironmentPruned, VerificationFailed,
                           VerificationPassed)
from shared.platform.credentials import registry_login
from shared.platform.runtime import ServiceRuntime
from shared.platform.settings import Settings


def create_app(settings: Settings | None = None) -> FastStream:
    """The deployer app: consumes gate.passed, rollback.ordered and pipeline.applied, one deployment at a time, and
    drift.check_requested; compares what runs with what it promoted at an interval."""
    runtime = ServiceRuntime("deployer", settings)
    s = runtime.settings
    run_dir = s.var_dir / "run" / "apps"
    drivers = {
        "local": LocalDriver(s.store_dir, run_dir, s.var_dir / "log" / "apps", app_user=s.app_user),
        "noop": NoopDriver(s.store_dir, run_dir),
        "container": ContainerDriver(s.container_engine, registries=s.image_registries, login=registry_login(s),
                                     container_port=s.container_port, user=s.container_user,
                                     stop_timeout=s.container_stop_timeout_s),
    }
    handlers = DeployerHandlers(runtime, drivers, s.secrets_dir, s.app_port_base, Router(s.var_dir / "router"))
    runtime.consume(
        [topics.GATES, topics.ROLLBACKS, topics.PIPELINES, topics.OPERATIONS],
        handlers.handle,
        description="gate.passed and rollback.ordered are the deployment orders; a pipeline.applied that "
                    "changes an environment's config redeploys what runs there with the new config (and sets each "
                    "environment's on_drift); drift.check_requested (from the operator API) asks for a drift "
                    "check now; canary.commanded pauses, resumes, aborts or promotes a canary in progress.",
        together=False,  # it starts and stops processes: each order commits on its own
        services_at_once=4,  # one deployment per environment at a time stays the rule (its lock)
        lane=environment_lane,  # a service's environments deploy side by side (a fan-out's prods at once)
        # A start and its verification (health checks, an image pull) may take a minute; a canary's steps
        # run outside the handler (canaries.py), however long they are.
        stuck_after_s=max(s.handler_stuck_after_s, 60.0),
    )
    runtime.background("retire-lanes", handlers.routed.retire_due)
    runtime.background("drift", handlers.drift.step)
    runtime.background("canaries", handlers.canaries.step)
    runtime.background("resume-rebuilt", lambda: recovery.resume_rebuilt(handlers))
    runtime.rebuild = lambda: recovery.rebuild(handlers)  # a new schema: from its own events, not by replaying orders
    runtime.emits(DeploymentStarted, DeploymentProgressed, DeploymentSucceeded, DeploymentFailed, VerificationPassed,
                  VerificationFailed, EnvironmentPruned, DriftDetected, DriftResolved, DriftChecked)
    return runtime.app
