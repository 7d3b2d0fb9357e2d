"""When to try a failed notification again, and when to give up: a tenacity policy.

The policy is tenacity's own strategies (`stop_after_attempt`, exponential wait plus random
jitter, `retry_if_exception` on transient errors), but the wait is not slept in-process:
the worker stores it as the row's `next_attempt_at`, so backoff survives restarts and a
sleeping retry never holds a thread, a lease or a decision. A `Retry-After` from the
receiver is honoured by never retrying sooner than it asks.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import DeliveryError
from .config import RetrySettings


@dataclass
class Verdict:
    """What to do after a failed attempt: retry after `delay` seconds, or dead-letter."""

    retry: bool
    delay: float = 0.0


class RetryPolicy:
    def __init__(self, settings: RetrySettings | None = None) -> None:
        import tenacity

        self.settings = settings or RetrySettings()
        s = self.settings
        self._retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(s.max_attempts),
            wait=tenacity.wait_exponential(multiplier=s.initial_delay, max=s.max_delay)
            + tenacity.wait_random(0, s.initial_delay),
            retry=tenacity.retry_if_exception(
                lambda exc: isinstance(exc, DeliveryError) and exc.transient),
        )

    def after_failure(self, attempt_number: int, error: DeliveryError) -> Verdict:
        """The verdict after attempt `attempt_number` (1 = the first) failed with `error`."""
        import tenacity

        state = tenacity.RetryCallState(self._retrying, fn=None, args=(), kwargs={})
        state.attempt_number = attempt_number
        state.set_exception((type(error), error, error.__traceback__))
        if not self._retrying.retry(state) or self._retrying.stop(state):
            return Verdict(retry=False)
        delay = float(self._retrying.wait(state))
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return Verdict(retry=True, delay=delay)
