"""The CloudEvents Kafka protocol binding: which content mode a record is in, and the envelope it carries.

Structured mode (what the services publish): the value is the whole envelope as JSON. Binary mode
(an SDK's `to_binary`): each attribute travels in a `ce_<attribute>` header, `datacontenttype` in the
`content-type` header, and the value is the event's `data` alone. A record with a `ce_specversion`
header is in binary mode. Either way shared/contracts/events.py validates the envelope in its structured form,
so a binary-mode event is the very Event (and the ledger's canonical bytes) of its structured twin.
Header names are case-sensitive, as the binding says: `CE_ID` or `Content-Type` is just another header.
"""

import re
from collections.abc import Sequence
from datetime import datetime

from shared.contracts import limits
from shared.contracts.events import UNCHECKED, Event, InvalidEvent, RecordKey, parse_binary_event, parse_event

Headers = Sequence[tuple[str, bytes | None]]
"""A record's headers as aiokafka gives them: (name, value) in order, a name possibly repeated."""
CE_PREFIX = "ce_"
CONTENT_TYPE = "content-type"
STRUCTURED = "application/cloudevents"
"""How a structured-mode content-type starts (`application/cloudevents+json`)."""
_ATTRIBUTE = re.compile(r"^[a-z0-9]+$")
"""A CloudEvents attribute name: lowercase ASCII letters and digits."""
_NOT_IN_HEADERS = {"data": "data travels as the record's value in binary mode",
                   "datacontenttype": "datacontenttype travels as the content-type header in binary mode"}


def parse_kafka_event(headers: Headers, value: bytes, expected_topic: str | None = None, *,
                      key: RecordKey = UNCHECKED, now: datetime | None = None,
                      max_skew_s: float = limits.MAX_CLOCK_SKEW_S) -> Event:
    """The event a record carries in either content mode, checked as `parse_event` checks it, else InvalidEvent."""
    attributes = _binary_attributes(headers)
    if attributes is None:
        return parse_event(value, expected_topic, key=key, now=now, max_skew_s=max_skew_s)
    return parse_binary_event(attributes, value, expected_topic, key=key, now=now, max_skew_s=max_skew_s)


def _binary_attributes(headers: Headers) -> dict[str, str] | None:
    """The attributes in a binary-mode record's headers, or None in structured mode; InvalidEvent for headers
    that are too big, unreadable or say both modes at once."""
    size = sum(len(name.encode()) + len(value or b"") for name, value in headers)
    if size > limits.MAX_HEADER_BYTES:
        raise InvalidEvent(f"headers of {size} bytes exceed the limit of {limits.MAX_HEADER_BYTES} bytes")
    found = _binding_headers(headers)
    content_type = found.pop(CONTENT_TYPE, "")
    if "ce_specversion" not in found:
        if found:  # a reader of the headers and one of the value could see two different events
            raise InvalidEvent(f"header {limits.shown(next(iter(found)))} without ce_specversion: binary mode "
                               "needs ce_specversion, structured mode carries no ce_ headers")
        return None
    if content_type.lower().startswith(STRUCTURED):  # media types ignore case
        raise InvalidEvent(f"content-type {limits.shown(content_type)} is structured mode but ce_specversion "
                           "is binary mode: a record is in one of them")
    attributes = {}
    for name, text in found.items():
        attribute = name.removeprefix(CE_PREFIX)
        if attribute in _NOT_IN_HEADERS:
            raise InvalidEvent(f"header {name!r}: {_NOT_IN_HEADERS[attribute]}")
        if not _ATTRIBUTE.fullmatch(attribute):
            raise InvalidEvent(f"header {limits.shown(name)} names no CloudEvents attribute (ce_ and lowercase "
                               "ASCII letters or digits)")
        attributes[attribute] = text
    if content_type:  # empty: none (FastStream writes an empty one when it knows no media type)
        attributes["datacontenttype"] = content_type
    return attributes


def is_binding_header(name: str) -> bool:
    """Whether the binding gives this header a meaning (a `ce_` attribute or the `content-type`)."""
    return name.startswith(CE_PREFIX) or name == CONTENT_TYPE


def _binding_headers(headers: Headers) -> dict[str, str]:
    """The binding's headers as text, in order; InvalidEvent for one that repeats, is null or is not UTF-8."""
    found: dict[str, str] = {}
    for name, value in headers:
        if not is_binding_header(name):
            continue
        if name in found:
            raise InvalidEvent(f"header {limits.shown(name)} appears more than once")
        if value is None:
            raise InvalidEvent(f"header {limits.shown(name)} has no value (null)")
        try:
            found[name] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEvent(f"header {limits.shown(name)} is not UTF-8") from None
    return found


def dead_letter_headers(headers: Headers) -> tuple[dict[str, str], list[str]]:
    """The binding's headers of a record as text, to keep on its dead letter, and the names that could not be
    kept as they were (repeated, null or not UTF-8: the dead-letter producer writes one text value per name)."""
    kept: dict[str, str] = {}
    altered: list[str] = []
    for name, value in headers:
        if not is_binding_header(name):
            continue
        text = (value or b"").decode("utf-8", errors="replace")
        if name in kept or value is None or text.encode() != value:
            altered.append(name)
        kept[name] = text
    return kept, sorted(set(altered))
