"""The one backoff (shared/platform/backoff.py, on tenacity): the waits it gives, and a retried operation's outcome."""

import pytest

from shared.platform.backoff import Backoff, retrying


def test_each_failure_in_a_row_doubles_the_wait_up_to_the_cap_and_a_success_starts_again():
    backoff = Backoff(0.2, cap=5.0)
    assert [backoff.failed() for _ in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    backoff.succeeded()
    assert backoff.failed() == 0.2


async def test_an_operation_is_retried_on_the_named_errors_until_it_succeeds():
    calls = []
    async for attempt in retrying((ConnectionError,), 5, 0.001, event="test.retry"):
        with attempt:
            calls.append(1)
            if len(calls) < 3:
                raise ConnectionError("refused")
    assert len(calls) == 3


async def test_the_last_error_is_raised_as_it_was_once_the_attempts_are_spent_and_others_at_once():
    calls = []
    with pytest.raises(ConnectionError, match="refused 2"):
        async for attempt in retrying((ConnectionError,), 2, 0.001, event="test.retry"):
            with attempt:
                calls.append(1)
                raise ConnectionError(f"refused {len(calls)}")
    with pytest.raises(ValueError):
        async for attempt in retrying((ConnectionError,), 5, 0.001, event="test.retry"):
            with attempt:
                calls.append(1)
                raise ValueError("not a retry")
    assert len(calls) == 3
