"""Why a collection failed: one class per `nsml_collection_errors_total` reason.

Every error raised while reading the run list is a `CollectionError`. The collector catches it at
one boundary, turns it into `nsml_up 0`, counts `reason` and logs one line with the message. No
message ever carries a key, a signature or a request header.
"""

from __future__ import annotations


class CollectionError(Exception):
    """A collection could not read the whole run list.

    `retryable` says whether the page may be asked again; `retry_after` is the API's
    `Retry-After` in seconds, when it sent one.
    """

    reason = "internal"

    def __init__(
        self, message: str, *, retryable: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class AuthError(CollectionError):
    """401/403: keys, signature, permission or clock."""

    reason = "auth"


class ThrottledError(CollectionError):
    """429 after every retry the deadline allowed."""

    reason = "throttled"


class HTTPStatusError(CollectionError):
    """Any other non-2xx answer (after retries for 5xx)."""

    reason = "http"

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, retryable=retryable, retry_after=retry_after)
        self.status = status


class RequestTimeoutError(CollectionError):
    """A request or the whole collection ran out of time."""

    reason = "timeout"


class ConnectionFailedError(CollectionError):
    """Refused, reset, DNS or TLS failure before a complete answer arrived."""

    reason = "connection"


class InvalidResponseError(CollectionError):
    """A 2xx answer whose body is not a run-list page (HTML, truncated, wrong types, too big)."""

    reason = "invalid_response"


class InconsistentPagingError(CollectionError):
    """Pages that contradict `totalCount` or each other (page ignored, endless pages, lies)."""

    reason = "inconsistent"


#: Every reason, so counters start at 0 and `rate()`/`increase()` see the first failure.
REASONS: tuple[str, ...] = (
    AuthError.reason,
    ThrottledError.reason,
    HTTPStatusError.reason,
    RequestTimeoutError.reason,
    ConnectionFailedError.reason,
    InvalidResponseError.reason,
    InconsistentPagingError.reason,
    CollectionError.reason,
)


class ConfigError(Exception):
    """An invalid setting: the CLI prints `str(self)` as one line and exits 2."""

    @classmethod
    def usage(cls, message: str) -> ConfigError:
        """A command line that does not parse (an unknown flag, a flag without its value)."""
        return cls(message)

    @classmethod
    def of(cls, problems: dict[str, str]) -> ConfigError:
        """One error naming every (setting, problem), in one line."""
        said = "; ".join(f"{setting}: {problem}" for setting, problem in problems.items())
        return cls(f"invalid setting {said}" if len(problems) == 1 else f"invalid settings: {said}")
