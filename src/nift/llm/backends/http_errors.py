"""Map the official SDKs' exceptions onto the engine's three outcomes: retry, fail this request, abort the run.

Both SDKs (openai, anthropic) share the same exception shapes (APIStatusError with `.status_code` and
`.response`, APITimeoutError, APIConnectionError), so one mapping serves both; their own retries are switched off
(`max_retries=0`) so that the engine's policy — backoff with jitter, `retry-after`, a shared cool-down — applies.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

from nift.llm.types import BackendAbort, RequestFailed, RetryableError

RETRY_STATUS = {408, 409, 425, 429}


def retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` / `retry-after` (seconds or an HTTP date); None if absent."""
    if headers is None:
        return None
    for name, div in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / div)
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            if parsed is not None:
                return max(0.0, email.utils.mktime_tz(parsed) - time.time())
    return None


def _body_message(err: Any) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(getattr(err, "message", "") or err)


def translate(sdk: Any, err: BaseException, backend: str, key_env: str, model: str) -> BaseException:
    """The engine exception for an SDK exception (`sdk` is the imported openai or anthropic module)."""
    if isinstance(err, sdk.APITimeoutError):
        return RetryableError("timeout", status=None)
    if isinstance(err, sdk.APIConnectionError):
        return RetryableError(f"connection error: {err.__cause__ or err}", status=None)
    if isinstance(err, sdk.APIResponseValidationError):
        return RetryableError(f"malformed response: {err}", status=getattr(err, "status_code", None))
    if isinstance(err, sdk.APIStatusError):
        status = err.status_code
        msg = _body_message(err)
        if status in RETRY_STATUS or status >= 500:
            return RetryableError(f"HTTP {status}: {msg}", retry_after=retry_after(err.response.headers),
                                  status=status)
        if status == 401:
            return BackendAbort(f"{backend}: the API rejected the key in ${key_env} (HTTP 401: {msg}); check that "
                                f"{key_env} holds a valid key for this endpoint")
        if status == 403:
            return BackendAbort(f"{backend}: permission denied for model {model!r} (HTTP 403: {msg})")
        if status == 404:
            return BackendAbort(f"{backend}: model {model!r} or endpoint not found (HTTP 404: {msg}); check "
                                "teacher.model, teacher.base_url and teacher.endpoint")
        return RequestFailed(f"HTTP {status}: {msg}", status=status)
    if isinstance(err, UnicodeEncodeError):  # our own request could not be encoded: no retry can fix it
        return RequestFailed(f"the request cannot be sent: {err}")
    if isinstance(err, ValueError):  # a body that is not the JSON the SDK expected
        return RetryableError(f"malformed response: {err}")
    return err
