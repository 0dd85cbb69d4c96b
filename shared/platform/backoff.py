"""One backoff for every retry in the services: tenacity's exponential wait, capped.

Operations retried until they succeed or run out of attempts (opening the database pool, rewinding a
consumer group) run under `retrying`; loops that go on for the life of a process and back off only while
they fail (the outbox relay, background tasks, a record's handler) count their failures in a `Backoff`.
"""

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential

log = structlog.get_logger()


def waits(first: float, cap: float = 5.0, factor: float = 2.0) -> wait_exponential:
    """first, first·factor, first·factor², … seconds, never more than `cap`."""
    return wait_exponential(multiplier=first, exp_base=factor, min=first, max=cap)


def delay(wait: wait_exponential, failures: int) -> float:
    """The wait after the `failures`-th failure in a row (from 1)."""
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})
    state.attempt_number = max(1, failures)
    return wait(state)


class Backoff:
    """The failures in a row of a loop that retries for ever, and the wait each one calls for."""

    def __init__(self, first: float, cap: float = 5.0, factor: float = 2.0) -> None:
        self.wait = waits(first, cap, factor)
        self.failures = 0

    def failed(self) -> float:
        """Count a failure; the seconds to wait before the next try."""
        self.failures += 1
        return delay(self.wait, self.failures)

    def succeeded(self) -> None:
        self.failures = 0


def retrying(errors: tuple[type[BaseException], ...], attempts: int, first: float, cap: float = 5.0,
             factor: float = 2.0, *, event: str, **context) -> AsyncRetrying:
    """`async for attempt in retrying(...): with attempt: …` — retried on `errors` up to `attempts` times, each
    wait logged as `event` (with the error and the wait); the last error is raised as it was."""

    def before_sleep(state: RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        log.warning(event, attempt=state.attempt_number, error=repr(error),
                    retry_in=round(state.upcoming_sleep, 3), **context)

    return AsyncRetrying(retry=retry_if_exception_type(errors), stop=stop_after_attempt(attempts),
                         wait=waits(first, cap, factor), before_sleep=before_sleep, reraise=True)


__all__: list[str] = ["Backoff", "delay", "retrying", "waits"]
