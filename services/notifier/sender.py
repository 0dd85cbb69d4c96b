"""Delivers the notifier's deliveries: a background task takes the due ones (a lease: `next_at` moved past the
attempt), POSTs each, signed, and records the outcome; a failure is tried again later (one second, doubling, up to
five minutes), and after the subscription's `max_attempts` it is given up to the dead-letter topic with the reason.

At least once: a notifier killed between a receiver's 2xx and recording it sends again after the lease; the
receiver knows the repeat by `X-Promote-Delivery` (one id per subscription and event).
"""

import asyncio
import time
from datetime import UTC, datetime

import asyncpg
import httpx
import structlog

from services.notifier.config import NotificationsFile
from services.notifier.domain import SIGNATURE_HEADER, retry_in, signature, url_allowed
from shared.contracts import topics
from shared.platform.runtime import ServiceRuntime

log = structlog.get_logger()
AT_ONCE = 20
LOOK_SECONDS = 1.0


class Sender:
    """One look: the due deliveries sent at once, each outcome recorded; seconds until the next look."""

    def __init__(self, runtime: ServiceRuntime, notifications: NotificationsFile) -> None:
        self.runtime, self.notifications = runtime, notifications
        self.timeout_s = runtime.settings.webhook_timeout_s

    async def step(self) -> float:
        notifications = self.notifications.load()
        if self.notifications.problem:
            self.runtime.background_tasks.errors["notifications-file"] = self.notifications.problem
        else:
            self.runtime.background_tasks.errors.pop("notifications-file", None)
        async with self.runtime.pool.acquire() as conn:
            due = await conn.fetch(
                "update deliveries set next_at = now() + make_interval(secs => $2) where delivery_id in "
                "(select delivery_id from deliveries where state = 'pending' and next_at <= now() order by next_at "
                "limit $1 for update skip locked) returning *", AT_ONCE, self.timeout_s * 2 + 5)
        if due:
            by_name = {s.name: s for s in notifications.subscriptions}
            async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False, trust_env=False) as client:
                errors = await asyncio.gather(*(self._send(client, row, by_name, notifications.allowed_urls)
                                                for row in due))
            async with self.runtime.pool.acquire() as conn:
                for row, error in zip(due, errors):
                    await self._settle(conn, row, error)
        async with self.runtime.pool.acquire() as conn:
            wait = await conn.fetchval("select extract(epoch from min(next_at) - now()) from deliveries "
                                       "where state = 'pending'")
        return LOOK_SECONDS if wait is None else min(LOOK_SECONDS, max(0.05, float(wait)))

    async def _send(self, client: httpx.AsyncClient, row: asyncpg.Record, by_name: dict,
                    allowed: tuple[str, ...]) -> str | None:
        """POST the delivery; None when the receiver answered 2xx, else what went wrong."""
        subscription = by_name.get(row["subscription"])
        if subscription is None:
            return f"subscription {row['subscription']!r} is no longer in the notifications file"
        if not url_allowed(row["url"], allowed):
            return f"{row['url']} is not under an allowed URL any more"
        secret = self.notifications.secret(subscription)
        if secret is None:
            return f"the secret {subscription.secret!r} of subscription {subscription.name!r} is missing, empty, " \
                   f"too long or writable by others"
        body = bytes(row["body"])
        headers = {"Content-Type": row["content_type"], "User-Agent": "promote-notifier",
                   SIGNATURE_HEADER: signature(secret, int(time.time()), body),
                   "X-Promote-Delivery": row["delivery_id"], "X-Promote-Subscription": row["subscription"]}
        try:  # the answer's body is never read: a receiver cannot make the notifier hold its bytes
            async with client.stream("POST", row["url"], content=body, headers=headers) as response:
                return None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        except httpx.HTTPError as error:
            return f"{type(error).__name__}: {str(error)[:200] or 'no detail'}"

    async def _settle(self, conn: asyncpg.Connection, row: asyncpg.Record, error: str | None) -> None:
        attempts = row["attempts"] + 1
        if error is None:
            await conn.execute("update deliveries set state = 'delivered', attempts = $2, delivered_at = now(), "
                               "last_error = null where delivery_id = $1", row["delivery_id"], attempts)
            log.info("webhook.delivered", subscription=row["subscription"], event_id=row["event_id"],
                     attempts=attempts)
            return
        if attempts < row["max_attempts"]:
            pause = retry_in(attempts)
            await conn.execute("update deliveries set attempts = $2, last_error = $3, "
                               "next_at = now() + make_interval(secs => $4) where delivery_id = $1",
                               row["delivery_id"], attempts, error, pause)
            log.warning("webhook.failed", subscription=row["subscription"], error=error, attempts=attempts,
                        retry_in=pause)
            return
        reason = f"webhook {row['subscription']} gave up after {attempts} attempt(s): {error}"
        await self.runtime.publish_raw(topics.DLQ, row["delivery_id"].encode(), bytes(row["body"]), {
            "content-type": row["content_type"], "dlq.reason": reason[:2000], "dlq.topic": row["topic"],
            "dlq.consumer": "notifier", "dlq.at": datetime.now(UTC).isoformat(), "dlq.event-id": row["event_id"],
            "dlq.subscription": row["subscription"], "dlq.url": row["url"]})
        await conn.execute("update deliveries set state = 'given_up', attempts = $2, last_error = $3 "
                           "where delivery_id = $1", row["delivery_id"], attempts, error)
        log.error("webhook.given_up", subscription=row["subscription"], event_id=row["event_id"], reason=reason)
