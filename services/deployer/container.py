"""The `container` driver: runs an image, by digest, on a container engine through the Docker Engine API.

The docker SDK speaks to a Docker host and to podman's API service alike (settings.container_engine).
A slot (an environment, or one lane of it) is one container per replica, each labelled with what it
runs (service, env, lane, slot, digest, config version, deployment id): after a restart the deployer
re-attaches by those labels, and a container that exited or was removed shows as not alive. Replica 0
is published on the slot's own loopback port, the others on ports the engine picks (the router sends
traffic to all of them). A container never runs as root (the image's user, or settings.container_user),
with every capability dropped, no new privileges, a read-only root file system and, when the pipeline
says so, memory and CPU limits.

Blocking (HTTP over the engine's socket): the deployer calls it through asyncio.to_thread.
"""

import asyncio
import re
import threading
from dataclasses import dataclass, replace

import docker
import docker.errors
import httpx
import requests.exceptions
import structlog

from services.deployer.domain import Running, Target
from services.deployer.drift import Expected, Instance, Observed, image_name
from services.deployer.driver import StartFailed, answered_version, check_version, wait_healthy

log = structlog.get_logger()

LABEL = "promote."
"""Prefix of the labels the driver puts on (and finds) its containers."""


class EngineUnavailable(ConnectionError):
    """The container engine does not answer: the order is retried (nothing is lost, nothing is stopped)."""


def container_name(service: str, slot: str, replica: int) -> str:
    """`promote-payments--prod.blue--0`: readable in `podman ps`, distinct per slot and replica."""
    return f"promote-{service}--{slot}--{replica}"


def _gone(error: docker.errors.APIError) -> bool:
    """The container no longer exists: 404, or podman's 500 "no such container" while it is being removed."""
    return isinstance(error, docker.errors.NotFound) or "no such container" in str(error.explanation or "")


@dataclass(frozen=True)
class Listing:
    """What the engine had at one moment: each container's summary (labels, state, image, ports), each image's
    repository digests by image id."""

    containers: tuple[dict, ...]
    images: dict[str, tuple[str, ...]]


_EXIT_CODE = re.compile(r"^Exited \((-?\d+)\)")


def _labels(summary: dict) -> dict[str, str]:
    return summary.get("Labels") or {}


def _replica(summary: dict) -> int:
    replica = _labels(summary).get(f"{LABEL}replica", "")
    return int(replica) if replica.isdigit() else 1 << 30


def _name(summary: dict) -> str:
    return ",".join(name.lstrip("/") for name in summary.get("Names") or []) or summary.get("Id", "")[:12]


def _one_line(error: Exception) -> str:
    text = getattr(error, "explanation", None) or str(error)
    return " ".join(str(text).split())[:300]


class ContainerDriver:
    """Pulls, starts, stops and inspects the containers of each slot."""

    def __init__(self, engine: str, *, registries: list[str], login: tuple[str | None, str | None],
                 container_port: int = 8080, user: str = "65534:65534", stop_timeout: int = 5) -> None:
        self.engine, self.registries, self.login = engine, registries, login
        self.container_port, self.user, self.stop_timeout = container_port, user, stop_timeout
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> docker.DockerClient:
        """The engine's client, made on first use (a deployer without containers never connects)."""
        with self._lock:
            if self._client is None:
                self._client = self._call(docker.DockerClient, base_url=self.engine, timeout=60)
            return self._client

    def _call(self, what, *args, **kwargs):
        """`what(*args, **kwargs)`, with an unreachable engine as EngineUnavailable."""
        try:
            return what(*args, **kwargs)
        except (requests.exceptions.ConnectionError, docker.errors.DockerException) as error:
            if isinstance(error, docker.errors.APIError):
                raise
            raise EngineUnavailable(f"the container engine at {self.engine} does not answer: "
                                    f"{_one_line(error)}") from None

    def describe(self, target: Target) -> str:
        """The image, by digest."""
        return target.location or ""

    def _containers(self, service: str, slot: str) -> list:
        """The slot's containers, running or not, by replica (one removed while listed is gone)."""
        listed = self._call(self.client.api.containers, all=True,
                            filters={"label": [f"{LABEL}service={service}", f"{LABEL}slot={slot}"]})
        found = []
        for summary in listed:
            try:
                found.append(self._call(self.client.containers.get, summary["Id"]))
            except docker.errors.APIError as error:
                if not _gone(error):
                    raise
        return sorted(found, key=lambda container: int(container.labels.get(f"{LABEL}replica", "0")))

    def launched(self, service: str, slot: str) -> Running | None:
        """What runs in the slot by its containers' labels; alive when every replica runs."""
        found = self._containers(service, slot)
        if not found:
            return None
        labels = found[0].labels
        expected = int(labels.get(f"{LABEL}replicas", "1"))
        running = [container for container in found if container.status == "running"]
        alive = len(running) == expected == len(found) and \
            len({container.labels.get(f"{LABEL}digest") for container in found}) == 1
        pid = found[0].attrs.get("State", {}).get("Pid") or 0
        return Running(pid=pid, digest=labels.get(f"{LABEL}digest", ""),
                       config_version=labels.get(f"{LABEL}config_version", ""), alive=alive,
                       leftover=not alive, deployment_id=labels.get(f"{LABEL}deployment_id", ""))

    def preflight(self, target: Target, slot: str) -> None:
        """The image is pulled (by digest, from an allowed registry, with the deployer's login) before anything
        running is stopped."""
        location = target.location
        if location is None:
            raise StartFailed(f"cannot start {target.digest}: the container driver runs images, and this "
                              "release is a file")
        registry, _, rest = location.partition("/")
        if registry not in self.registries:
            raise StartFailed(f"cannot start {location}: registry {registry} is not one the deployer pulls from")
        if rest.rpartition("@")[2] != target.digest:
            raise StartFailed(f"cannot start {location}: it does not name digest {target.digest}")
        try:
            if location in (self._call(self.client.images.get, location).attrs.get("RepoDigests") or []):
                return  # pulled before from this repository: an image by digest never changes
            # podman finds an image by its digest alone, pulled from another repository: this one's
            # registry must be asked (it may refuse us), and the pull records the location for verify.
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError:
            pass  # podman answers some unknown references with 500: pull decides
        username, password = self.login
        auth = {"username": username, "password": password} if username and password else None
        repository, _, digest = location.rpartition("@")
        try:
            # The progress stream, not images.pull: an engine reports a registry's refusal in the stream
            # (podman: "manifest unknown"), which images.pull does not raise.
            for line in self._call(self.client.api.pull, repository, tag=digest, auth_config=auth, stream=True,
                                   decode=True):
                if isinstance(line, dict) and line.get("error"):
                    raise StartFailed(f"cannot pull {location}: {_one_line(Exception(line['error']))}")
            pulled = self._call(self.client.images.get, location)
        except docker.errors.APIError as error:
            raise StartFailed(f"cannot pull {location}: {_one_line(error)}") from None
        if location not in (pulled.attrs.get("RepoDigests") or []):
            raise StartFailed(f"cannot pull {location}: the engine holds it under "
                              f"{', '.join(pulled.attrs.get('RepoDigests') or []) or 'no repository'}")
        log.info("image.pulled", location=location)

    def start(self, target: Target, slot: str, variables: dict[str, str]) -> int:
        """One container per replica; replica 0 on the slot's port (variables["PORT"]); replica 0's pid."""
        self._remove(target.service, slot)  # what is left of a release that stopped or exited
        port = int(variables["PORT"])
        environment = {**variables, "PORT": str(self.container_port)}
        lane = slot.partition(".")[2]
        image = self._call(self.client.images.get, target.location)
        user = image.attrs.get("Config", {}).get("User") or ""
        if user.split(":")[0] in ("", "0", "root"):
            user = self.user  # never root
        options = {}
        if target.resources is not None:
            if target.resources.memory_bytes is not None:
                options["mem_limit"] = target.resources.memory_bytes
            if target.resources.cpus is not None:
                options["nano_cpus"] = int(target.resources.cpus * 1e9)
        first = None
        for replica in range(target.replicas):
            labels = {f"{LABEL}service": target.service, f"{LABEL}env": target.env, f"{LABEL}lane": lane,
                      f"{LABEL}slot": slot, f"{LABEL}digest": target.digest,
                      f"{LABEL}config_version": target.config_version,
                      f"{LABEL}deployment_id": target.deployment_id, f"{LABEL}version": target.version,
                      f"{LABEL}replica": str(replica), f"{LABEL}replicas": str(target.replicas)}
            published = ("127.0.0.1", port) if replica == 0 else ("127.0.0.1",)
            try:
                container = self._call(
                    self.client.containers.run, target.location, detach=True,
                    name=container_name(target.service, slot, replica), environment=environment, labels=labels,
                    ports={f"{self.container_port}/tcp": published}, user=user, cap_drop=["ALL"],
                    security_opt=["no-new-privileges"], read_only=True, **options)
            except docker.errors.APIError as error:
                raise StartFailed(f"cannot start {target.location}: {_one_line(error)}") from None
            first = first or container
        assert first is not None
        self._call(first.reload)
        return first.attrs.get("State", {}).get("Pid") or 0

    def stop(self, service: str, slot: str, pid: int, timeout: float | None = None) -> None:
        """Stop and remove every container of the slot (SIGTERM, SIGKILL after the stop timeout)."""
        self._remove(service, slot, self.stop_timeout if timeout is None else int(timeout))

    def _remove(self, service: str, slot: str, timeout: int = 0) -> None:
        for container in self._containers(service, slot):
            try:
                if container.status == "running":
                    self._call(container.stop, timeout=timeout)
                self._call(container.remove, force=True)
            except docker.errors.APIError as error:
                if not _gone(error):  # gone meanwhile (removed by hand, or by another call)
                    raise

    def ports(self, service: str, slot: str, port: int) -> list[int]:
        """The host ports the slot's running replicas are published on."""
        found = []
        for container in self._containers(service, slot):
            if container.status == "running" and (published := self._published(container)) is not None:
                found.append(published)
        return found or [port]

    def _published(self, container) -> int | None:
        bindings = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{self.container_port}/tcp")
        for binding in bindings or ():
            if binding.get("HostPort"):
                return int(binding["HostPort"])
        return None

    async def verify(self, target: Target, slot: str, pid: int, port: int,
                     timeout: float = 15.0) -> dict[str, str]:
        """Each replica: its container runs, from the promoted image (its repo digests name the location),
        answers /health and the release's /version on its published port."""
        found = await asyncio.to_thread(self._containers, target.service, slot)
        if len(found) != target.replicas:
            return {"process": f"{len(found)} of {target.replicas} containers exist", "digest": "not run",
                    "health": "not run", "version": "not run"}
        checks: dict[str, str] = {}
        for container in found:
            replica = container.labels.get(f"{LABEL}replica", "0")
            result = await self._verify_one(target, container, timeout)
            for name, outcome in result.items():
                if checks.get(name, "passed") == "passed" and outcome != "passed":
                    checks[name] = outcome if target.replicas == 1 else f"replica {replica}: {outcome}"
                checks.setdefault(name, outcome)
        if target.replicas > 1:
            checks["replicas"] = f"{target.replicas} of {target.replicas} verified" \
                if all(value == "passed" for value in checks.values()) else "not all verified"
        return checks

    async def _verify_one(self, target: Target, container, timeout: float) -> dict[str, str]:
        checks: dict[str, str] = {}
        checks["digest"] = await asyncio.to_thread(self._image_check, container, target)

        async def alive() -> bool:
            return await asyncio.to_thread(self._state, container) == "running"

        published = self._published(container)
        if published is None:
            checks.update(health="no published port", version="not run")
        else:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{published}", timeout=2.0) as client:
                checks["health"] = await wait_healthy(client, alive, timeout)
                checks["version"] = await check_version(client, target.version)
        state = await asyncio.to_thread(self._state, container)
        checks["process"] = "passed" if state == "running" else f"container {container.name} {state}"
        return checks

    def _state(self, container) -> str:
        """running, `exited with code N`, or removed."""
        try:
            self._call(container.reload)
        except docker.errors.APIError as error:
            if _gone(error):
                return "removed"
            raise
        if container.status == "running":
            return "running"
        return f"exited with code {container.attrs.get('State', {}).get('ExitCode')}"

    async def survey(self) -> "Listing":
        """Every container and image the engine has, listed once for a round of drift checks (two calls, however
        many environments the round compares)."""
        try:
            return await asyncio.to_thread(self._survey)
        except docker.errors.APIError as error:  # the engine answers, but not this time: nothing can be said
            raise EngineUnavailable(f"the container engine refused a look: {_one_line(error)}") from None

    def _survey(self) -> "Listing":
        containers = self._call(self.client.api.containers, all=True)
        images = self._call(self.client.api.images)
        return Listing(tuple(containers), {image.get("Id", ""): tuple(image.get("RepoDigests") or ())
                                           for image in images})

    async def observe(self, expected: Expected, http: httpx.AsyncClient, listing: "Listing | None" = None) -> Observed:
        """The slot's containers (by label, from the round's `listing`, else a new one): running or not, from which
        image, with which environment (read from each running one), what their /version answers; and any running
        container the deployer did not start that publishes the slot's port."""
        listing = listing or await self.survey()
        ours = sorted((summary for summary in listing.containers if _labels(summary).get(f"{LABEL}service") ==
                       expected.service and _labels(summary).get(f"{LABEL}slot") == expected.slot),
                      key=lambda summary: _replica(summary))
        instances = []
        for summary in ours:
            instance = self._instance(summary, expected, listing)
            if instance.running:
                published = self._published_port(summary)
                try:
                    variables = await asyncio.to_thread(self._variables, summary["Id"], set(expected.variables))
                except docker.errors.APIError as error:
                    if not _gone(error):
                        raise EngineUnavailable(f"the container engine refused a look: {_one_line(error)}") from None
                    variables = None  # removed since the listing: the next round sees it gone
                version, error = (None, "not asked: no published port") if published is None else \
                    await answered_version(http, published)
                instance = replace(instance, variables=variables, version=version, version_error=error)
            instances.append(instance)
        port_version = None
        if not any(instance.running for instance in instances):
            port_version = (await answered_version(http, expected.port))[0]
        ids = {summary.get("Id") for summary in ours}
        foreign = [f"container {_name(summary)}, not started by the deployer, publishes port {expected.port} with "
                   f"image {image_name(listing.images.get(summary.get('ImageID', ''), ()), summary.get('ImageID'))}"
                   for summary in listing.containers if summary.get("Id") not in ids and
                   summary.get("State") == "running" and
                   any(binding.get("PublicPort") == expected.port for binding in summary.get("Ports") or [])]
        return Observed(tuple(instances), tuple(foreign), port_version)

    def _instance(self, summary: dict, expected: Expected, listing: "Listing") -> Instance:
        """One container of the slot as listed: its state, image and whether the deployer named it (no variables
        yet)."""
        name = _name(summary)
        replica = _labels(summary).get(f"{LABEL}replica", "")
        named = replica.isdigit() and int(replica) < expected.replicas and \
            name == container_name(expected.service, expected.slot, int(replica))
        state = summary.get("State") or "unknown"
        if state == "exited":
            code = _EXIT_CODE.search(summary.get("Status") or "")
            state = f"exited with code {code.group(1)}" if code else "exited"
        elif state != "running":
            state = f"is {state}"
        image = summary.get("ImageID") or None
        return Instance(f"container {name}", state, image_digests=listing.images.get(image or "", ()), image=image,
                        started_by_deployer=named)

    def _variables(self, container_id: str, keys: set[str]) -> dict[str, str]:
        """The container's environment, only `keys` (its inspect: a listing does not hold it). Blocking."""
        attrs = self._call(self.client.api.inspect_container, container_id)
        found = {}
        for item in (attrs.get("Config") or {}).get("Env") or []:
            key, _, value = item.partition("=")
            if key in keys:
                found[key] = value
        return found

    def _published_port(self, summary: dict) -> int | None:
        """The host port a listed container publishes its app's port on."""
        for binding in summary.get("Ports") or []:
            if binding.get("PrivatePort") == self.container_port and binding.get("PublicPort"):
                return int(binding["PublicPort"])
        return None

    def evict(self, service: str, slot: str, port: int) -> list[str]:
        """Stop (not remove: it stays for whoever looks into it) every running container the deployer did not start
        for the slot that publishes the slot's port, so that a restore can take the port back; their names."""
        stopped = []
        for summary in self._call(self.client.api.containers)[:500]:
            labels = summary.get("Labels") or {}
            ours = (labels.get(f"{LABEL}service"), labels.get(f"{LABEL}slot")) == (service, slot)
            if not ours and any(binding.get("PublicPort") == port for binding in summary.get("Ports") or []):
                try:
                    self._call(self.client.api.stop, summary["Id"], timeout=self.stop_timeout)
                except docker.errors.APIError as error:
                    if not _gone(error):
                        raise
                stopped.append(",".join(name.lstrip("/") for name in summary.get("Names") or []) or summary["Id"][:12])
        if stopped:
            log.warning("drift.evicted", slot=slot, port=port, stopped=stopped)
        return stopped

    def _image_check(self, container, target: Target) -> str:
        try:
            image = self._call(self.client.images.get, container.attrs["Image"])
        except docker.errors.NotFound:
            return f"the image of container {container.name} is gone"
        digests = image.attrs.get("RepoDigests") or []
        if target.location in digests:
            return "passed"
        return f"container {container.name} runs an image whose digests are {', '.join(digests) or 'none'}"
