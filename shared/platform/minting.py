"""How a service mints the events it emits: their source, correlation and ids a re-run reproduces.

Split out of runtime.py along its seam: minting needs the service's name and its id key, nothing that
connects, so handlers' fast tests mint the same ids a running service does.
"""

import hashlib
import hmac
import uuid

from shared.contracts.events import Event, EventData, new_event


def derived_id(key: bytes | None, name: str) -> str:
    """The id of an event derived from `name` (what caused it): a re-run reproduces it, and without the service's
    key nobody can predict it (HMAC-SHA256, shown as a UUID). No key (unit tests): a plain uuid5."""
    if key is None:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, name))
    return str(uuid.UUID(bytes=hmac.new(key, name.encode(), hashlib.sha256).digest()[:16]))


class EventMint:
    """The events of service `service`, with ids keyed by `key` (the PROMOTE_EVENT_ID_KEY secret)."""

    def __init__(self, service: str, key: bytes | None) -> None:
        self.service = service
        self.key = key

    def event(self, data: EventData, cause: Event, index: int = 0) -> Event:
        """An event caused by `cause`, with an id that a re-run (or a rebuild) reproduces.

        Events that happen once per subject (`once_per` fields, e.g. one gate.passed per release and
        environment) take their id from those fields: a rebuild that reaches the same verdict through
        another order of inputs still emits the same id, which consumers then ignore. Others take
        theirs from the cause.
        """
        return self._identified(data, f"{cause.id}/{self.service}/{data.event_type}/{index}", cause.correlation_id)

    def timed_event(self, data: EventData, timer: str, index: int = 0, *, correlation_id: str | None = None) -> Event:
        """An event a durable timer or a watch emits, with no cause: its id derives from `timer` (what and when it
        was due), so a timer that fires again after a crash emits the same id; `correlation_id`: the chain it
        belongs to, if any (a time gate's verdict: its promotion's). `once_per` ids as in `event`."""
        return self._identified(data, f"{timer}/{self.service}/{data.event_type}/{index}", correlation_id)

    def events(self, datas: list[EventData], cause: Event) -> list[Event]:
        """`event` for each item, numbered so that two of one type get distinct ids."""
        return [self.event(data, cause, index) for index, data in enumerate(datas)]

    def _identified(self, data: EventData, name: str, correlation_id: str | None) -> Event:
        if data.once_per:
            name = "/".join([data.event_type, *(str(getattr(data, field)) for field in data.once_per)])
        return new_event(data, source=f"/promote/{self.service}", correlation_id=correlation_id,
                         event_id=derived_id(self.key, name))
