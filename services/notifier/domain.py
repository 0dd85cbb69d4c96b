"""Notifications, pure: which events are worth a message, who subscribed to them, what the message is (the
CloudEvents HTTP binding, or a Slack-compatible text), how it is signed, and when a failed delivery is tried again.

Subscriptions are the notifier's configuration (a YAML file, setting `notifications_file`), like Alertmanager's
receivers: what is subscribed and where it goes, with each receiver's HMAC secret in a file beside the
notifier's credentials, never on the bus.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from shared.contracts.events import (DriftDetected, Event, GatePending, RollbackCompleted, RollbackFailed,
                                     RollbackOrdered, VerificationFailed)
from shared.contracts.limits import NAME_PATTERN

Kind = Literal["approval_needed", "verification_failed", "rollback", "drift", "dead_letter"]
KINDS: tuple[str, ...] = Kind.__args__  # type: ignore[attr-defined]
MAX_SUBSCRIPTIONS = 256
MAX_URL_CHARS = 2048
SIGNATURE_HEADER = "X-Promote-Signature"
"""`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: a receiver recomputes it with its secret and refuses
a request whose `t` is too old (a replay)."""


class Subscription(BaseModel):
    """What one receiver is sent: events of these kinds, for these services and environments ("*": any)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
    url: Annotated[str, StringConstraints(max_length=MAX_URL_CHARS)]
    kinds: tuple[Kind, ...] = Field(min_length=1)
    services: tuple[str, ...] = ("*",)
    envs: tuple[str, ...] = ("*",)
    format: Literal["cloudevents", "slack"] = "cloudevents"
    max_attempts: int = Field(8, ge=1, le=20, strict=True)
    """Tries before the delivery is given up to the dead-letter topic (one second, then doubling, up to 5 min)."""
    secret: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
    """The file in the notifier's secrets directory whose content is this receiver's HMAC key."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if _origin(url) is None:
            raise ValueError("url: an http:// or https:// URL with a host, no credentials (requests are signed "
                             "instead), no spaces, backslashes or control characters")
        return url

    @field_validator("services")
    @classmethod
    def _services(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        return _names(names, "services")

    @field_validator("envs")
    @classmethod
    def _envs(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        return _names(names, "envs")


def _names(names: tuple[str, ...], field: str) -> tuple[str, ...]:
    if not names:
        raise ValueError(f"{field}: at least one name, or \"*\"")
    for name in names:
        if name != "*" and not re.fullmatch(NAME_PATTERN, name):
            raise ValueError(f"{field}: {name!r} is not a name (or \"*\")")
    return names


class Notifications(BaseModel):
    """The notifications file: `subscriptions: [...]`, and which URLs they may name (`allowed_urls`: prefixes
    such as `https://hooks.slack.com/` — nothing else is ever requested, so a subscription cannot point the
    notifier at the database, the broker or a metadata service)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_urls: tuple[str, ...] = ()
    subscriptions: tuple[Subscription, ...] = Field((), max_length=MAX_SUBSCRIPTIONS)

    @field_validator("subscriptions")
    @classmethod
    def _unique(cls, subscriptions: tuple[Subscription, ...]) -> tuple[Subscription, ...]:
        names = [subscription.name for subscription in subscriptions]
        if duplicate := next((name for name in names if names.count(name) > 1), None):
            raise ValueError(f"subscription {duplicate!r} is named twice")
        return subscriptions

    def refused(self) -> list[str]:
        """The subscriptions whose URL is under none of `allowed_urls`, each with the reason."""
        allowed = ", ".join(self.allowed_urls) or "none"
        return [f"subscription {s.name!r}: {s.url} is not under an allowed URL ({allowed})"
                for s in self.subscriptions if not url_allowed(s.url, self.allowed_urls)]


def url_allowed(url: str, allowed: tuple[str, ...]) -> bool:
    """`url` is under one of the `allowed` prefixes: the same scheme, host and port (parsed, not compared as text,
    so `https://hooks.example/` never allows `https://hooks.example.evil/`), and a path that starts with the
    prefix's."""
    target = _origin(url)
    return target is not None and any((origin := _origin(prefix)) is not None and origin[:3] == target[:3]
                                      and target[3].startswith(origin[3]) for prefix in allowed)


def _origin(url: str) -> tuple[str, str, int, str] | None:
    if any(c in url for c in "\\ \t\r\n\x00") or any(ord(c) < 0x20 or ord(c) == 0x7f for c in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return None
    return parts.scheme, parts.hostname.lower(), port, parts.path or "/"


@dataclass(frozen=True)
class Notice:
    """An event worth a message: its kind, the service and environment it is about, and a line for people."""

    kind: Kind
    service: str
    env: str | None
    text: str


def notice_of(event: Event) -> Notice | None:
    """The notice an event makes, or None (most events are no one's business but the services')."""
    data = event.data
    service, env = data.service, getattr(data, "env", None)
    at = f"{service} {getattr(data, 'version', '')} in {env}".replace("  ", " ")
    match data:
        case GatePending() if any("approval" in reason for reason in data.reasons):
            return Notice("approval_needed", service, env,
                          f"{at} is waiting for approval: {'; '.join(data.reasons)}")
        case VerificationFailed():
            return Notice("verification_failed", service, env, f"{at} failed verification: {data.reason}")
        case RollbackOrdered():
            return Notice("rollback", service, env, f"{service} in {env} is rolling back to {data.version} "
                                                    f"(from {data.from_version}): {data.reason}")
        case RollbackCompleted():
            return Notice("rollback", service, env, f"{service} in {env} was rolled back to {data.version}")
        case RollbackFailed():
            return Notice("rollback", service, env, f"the rollback of {service} in {env} failed: {data.reason}")
        case DriftDetected():
            return Notice("drift", service, env, f"{service} in {env} drifted: {'; '.join(data.differences)}")
    return None


@dataclass(frozen=True)
class DeadLetter:
    """A record of the dead-letter topic, as the notifier tells of it: where it is, what its headers say (the
    consumer that gave it up, the reason, where it came from) and, when its value is an event that names one,
    the service and environment it was about. Its value itself is never sent on: it may be anything."""

    partition: int
    offset: int
    headers: dict[str, str]
    size: int
    service: str
    env: str | None

    @property
    def id(self) -> str:
        return f"dead-letter-{self.partition}-{self.offset}"

    @classmethod
    def of(cls, partition: int, offset: int, headers: dict[str, str], value: bytes) -> "DeadLetter":
        service, env = "", None
        try:
            data = json.loads(value).get("data", {})
            if isinstance(data, dict):
                service = data.get("service") if _is_name(data.get("service")) else ""
                env = data.get("env") if _is_name(data.get("env")) else None
        except (ValueError, UnicodeDecodeError, AttributeError):
            pass  # not JSON, or not an object: a dead letter about no service in particular
        return cls(partition, offset, headers, len(value), service, env)


def _is_name(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(NAME_PATTERN, value) is not None


def dead_letter_notice(letter: DeadLetter) -> Notice | None:
    """The notice of a dead letter; None for the notifier's own given-up deliveries (telling of those by webhook
    would give up more of them while a receiver is down, without end)."""
    headers = letter.headers
    if headers.get("dlq.consumer") == "notifier" or "dlq.subscription" in headers:
        return None
    source = f"{headers.get('dlq.topic', '?')} (partition {headers.get('dlq.partition', '?')}, offset " \
             f"{headers.get('dlq.offset', '?')})"
    return Notice("dead_letter", letter.service, letter.env,
                  f"{headers.get('dlq.consumer', 'a consumer')} gave up a record of {source}: "
                  f"{headers.get('dlq.reason', 'no reason given')[:500]}")


def dead_letter_message(subscription: Subscription, letter: DeadLetter, notice: Notice) -> tuple[bytes, str]:
    """The request body for a dead letter: a CloudEvent `dead_letter.recorded` (its data: where the record came
    from, which consumer gave it up and why, its size; not its bytes), or the Slack text."""
    if subscription.format == "slack":
        return json.dumps({"text": f"[dead letter] {notice.text} ({letter.id})"}).encode(), "application/json"
    headers = letter.headers
    data = {"reason": headers.get("dlq.reason"), "consumer": headers.get("dlq.consumer"),
            "topic": headers.get("dlq.topic"), "partition": _int(headers.get("dlq.partition")),
            "offset": _int(headers.get("dlq.offset")), "at": headers.get("dlq.at"), "size": letter.size,
            "service": letter.service or None, "env": letter.env,
            "dead_letter": {"partition": letter.partition, "offset": letter.offset}}
    event = {"specversion": "1.0", "id": letter.id, "source": "/promote/notifier", "type": "dead_letter.recorded",
             "datacontenttype": "application/json", "data": data}
    if headers.get("dlq.at"):
        event["time"] = headers["dlq.at"]
    return json.dumps(event, separators=(",", ":")).encode(), "application/cloudevents+json; charset=utf-8"


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def wanted(subscription: Subscription, notice: Notice) -> bool:
    """The subscription asked for this kind, for this service and environment."""
    return (notice.kind in subscription.kinds
            and ("*" in subscription.services or notice.service in subscription.services)
            and ("*" in subscription.envs or notice.env in subscription.envs))


def delivery_id(subscription: str, event_id: str) -> str:
    """One delivery per subscription and event, whoever handles the event again (a redelivery, a replay)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"promote-notify/{subscription}/{event_id}"))


def message(subscription: Subscription, event: Event, notice: Notice) -> tuple[bytes, str]:
    """The request body and its content type: the event itself in the CloudEvents structured mode, or a Slack
    incoming-webhook message (`text`, with the event id to look it up)."""
    if subscription.format == "slack":
        text = f"[{notice.kind.replace('_', ' ')}] {notice.text} (event {event.id})"
        return json.dumps({"text": text}).encode(), "application/json"
    return event.to_bytes(), "application/cloudevents+json; charset=utf-8"


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The value of the signature header for `body` sent at `timestamp`."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: bytes, header: str, body: bytes, now: int, tolerance_s: int = 300) -> bool:
    """What a receiver checks (tests and docs use it): the MAC matches and the timestamp is recent."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    expected = signature(secret, timestamp, body)
    return abs(now - timestamp) <= tolerance_s and hmac.compare_digest(expected, header)


def retry_in(attempts: int, first_s: float = 1.0, cap_s: float = 300.0) -> float:
    """Seconds before the next try after `attempts` failed ones: doubling from `first_s`, capped at `cap_s`."""
    return min(cap_s, first_s * 2 ** max(0, attempts - 1))
