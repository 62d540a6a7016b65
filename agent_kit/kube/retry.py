"""The retry policy of both agents' API calls, in one place (tenacity).

Three shapes, each for one kind of failure of :mod:`agent_kit.kube.errors`:

- :func:`call_with_retries`: one call, retried a few times while it fails with an error
  a retry can cure (:class:`~agent_kit.kube.errors.UnavailableError`: no answer, 429,
  5xx), with exponential backoff and jitter.
- :func:`retry_on_conflict`: a read-decide-write step, run again while someone else
  wrote in between (409 Conflict; optionally 404, an object that vanished). Like
  client-go's ``retry.RetryOnConflict``: the step re-reads, so a short pause suffices.
- :func:`retry_until_stopped`: a loop that must never give up (a watch, the node's
  publisher): every failure is retried with exponential backoff and jitter until a stop
  event is set.

Sleeps end early when the stop event is set, so an agent shuts down at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_any,
    stop_when_event_set,
    wait_exponential,
    wait_random,
)
from tenacity.wait import wait_base

from agent_kit.kube.errors import ApiError, ConflictError

__all__ = ["backoff", "call_with_retries", "retry_on_conflict", "retry_until_stopped"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def backoff(initial_s: float, max_s: float) -> wait_base:
    """Exponential backoff from ``initial_s`` up to ``max_s``, plus up to ``initial_s`` of
    jitter so that many clients do not retry in step."""
    return wait_exponential(multiplier=initial_s, max=max_s) + wait_random(0, initial_s)


def _sleep_until(event: threading.Event) -> Callable[[float], None]:
    """A sleep for tenacity that ends early when ``event`` is set."""

    def sleep(seconds: float) -> None:
        event.wait(seconds)

    return sleep


def _is_retryable(err: BaseException) -> bool:
    return isinstance(err, ApiError) and err.retryable


def _log_retry(state: RetryCallState) -> None:
    outcome = state.outcome
    err = outcome.exception() if outcome is not None else None
    log.warning(
        "retrying after an API error",
        extra={"attempt": state.attempt_number, "error": str(err)},
    )


def call_with_retries(
    call: Callable[[], _T],
    *,
    attempts: int = 5,
    initial_s: float = 0.2,
    max_s: float = 5.0,
    stop: threading.Event | None = None,
) -> _T:
    """``call()``, retried with exponential backoff and jitter while it raises a
    retryable ApiError (no answer, 429, 5xx), at most ``attempts`` times or until
    ``stop`` is set; the last error is raised."""
    event = stop or threading.Event()
    retrying = Retrying(
        retry=retry_if_exception(_is_retryable),
        wait=backoff(initial_s, max_s),
        stop=stop_any(stop_after_attempt(attempts), stop_when_event_set(event)),
        sleep=_sleep_until(event),
        reraise=True,
        before_sleep=_log_retry,
    )
    return retrying(call)


def retry_on_conflict(
    step: Callable[[], _T],
    *,
    attempts: int = 5,
    errors: tuple[type[ApiError], ...] = (ConflictError,),
    initial_s: float = 0.01,
    max_s: float = 0.5,
    on_retry: Callable[[ApiError], None] | None = None,
) -> _T:
    """``step()``, run again while it raises one of ``errors`` (by default a 409 Conflict),
    at most ``attempts`` times in all; the last error is raised.

    ``step`` must read what it decides on afresh each time (a conflict means the copy it
    wrote from was stale). ``on_retry`` is told each error that is retried.
    """

    def before_sleep(state: RetryCallState) -> None:
        outcome = state.outcome
        err = outcome.exception() if outcome is not None else None
        if on_retry is not None and isinstance(err, ApiError):
            on_retry(err)

    retrying = Retrying(
        retry=retry_if_exception_type(errors),
        wait=backoff(initial_s, max_s),
        stop=stop_after_attempt(max(1, attempts)),
        reraise=True,
        before_sleep=before_sleep,
    )
    return retrying(step)


def retry_until_stopped(
    stop: threading.Event,
    *,
    initial_s: float,
    max_s: float,
    errors: type[BaseException] | tuple[type[BaseException], ...] = ApiError,
    on_retry: Callable[[BaseException, int], None] | None = None,
) -> Retrying:
    """A tenacity ``Retrying`` that retries a call raising one of ``errors`` with
    exponential backoff and jitter, forever, until ``stop`` is set; then the last error
    is raised. Other exceptions pass through at once.

    ``on_retry(error, attempt)`` runs before each pause (to log, to count failures);
    ``attempt`` counts from 1. Reusable: each call of the returned object
    (``retrying(fn, *args)``) starts from ``initial_s`` again.
    """

    def before_sleep(state: RetryCallState) -> None:
        outcome = state.outcome
        err = outcome.exception() if outcome is not None else None
        if on_retry is not None and err is not None:
            on_retry(err, state.attempt_number)

    return Retrying(
        retry=retry_if_exception_type(errors),
        wait=backoff(initial_s, max_s),
        stop=stop_when_event_set(stop),
        sleep=_sleep_until(stop),
        reraise=True,
        before_sleep=before_sleep,
    )
