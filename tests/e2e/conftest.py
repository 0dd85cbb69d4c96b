"""End-to-end fixtures: the real broker, database and service processes, started by the project's scripts."""

import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

import devstack
from devstack import containers
from shared.platform.client import EventWatcher, Publisher
from shared.platform.settings import Settings
from tests.e2e.support import Scenario

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def stack() -> Settings:
    """Kafka, PostgreSQL and the five services running the code under test (restarted once per session)."""
    devstack.up(services=False)
    for name in devstack.COMPONENTS:
        devstack.stop_service(name)
        devstack.start_service(name)
    devstack.wait_services_ready(90)
    return Settings()


@pytest.fixture
async def scenario(stack: Settings, tmp_path: Path):
    """A fresh service name, a publisher and a watcher started before the test acts."""
    async with Publisher(stack) as publisher, EventWatcher(stack) as watcher:
        world = Scenario(settings=stack, publisher=publisher, watcher=watcher, dist=_drop_folder(stack, tmp_path))
        yield world
    _stop_apps_of(stack, world.service)
    shutil.rmtree(world.dist, ignore_errors=True)


def _drop_folder(settings: Settings, tmp_path: Path) -> Path:
    """A fresh folder for this test's artifacts in the drop directory (intake reads only under its roots)."""
    parent = settings.drop_dir / "e2e"
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{tmp_path.name}-", dir=parent))


def _stop_apps_of(settings: Settings, service: str) -> None:
    """Stop the app processes and remove the containers the deployer started for this test's service."""
    for record in (settings.var_dir / "run" / "apps").glob(f"{service}--*.json"):
        pid = json.loads(record.read_text())["pid"]
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        record.unlink()
    if containers.running_pid() is not None:
        # podman's CLI: a container the deployer removes meanwhile (a lane retiring) is no error for `rm -i`
        ids = containers.podman("ps", "-aq", "--filter", f"label=promote.service={service}").stdout.split()
        if ids:
            containers.podman("rm", "-f", "-i", "-t", "0", *ids)


# Modules that kill services, restart the broker or the database, or replay history run last,
# in this order, so that a failure there cannot hide what the plain end-to-end tests show.
LAST = ("test_time_gates", "test_disaster", "test_crash", "test_scale_out", "test_infrastructure")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Plain tests first (in file order), then the disruptive ones in LAST order."""
    def rank(item: pytest.Item) -> int:
        module = item.module.__name__.rsplit(".", 1)[-1]
        return LAST.index(module) + 1 if module in LAST else 0

    items.sort(key=rank)  # stable: file order is kept within each rank
