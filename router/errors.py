"""Gateway errors and their OpenAI-shaped bodies.

Every failure a client can see is a ``GatewayError`` and serialises to
``{"error": {"message", "type", "param", "code"}}``, the shape the openai SDK parses.

GatewayError
 ├── InvalidRequestError          400  invalid_request_error
 │    ├── ModelNotFoundError      404  model_not_found
 │    ├── NotFoundError           404  (a stored response that does not exist for this client)
 │    └── PayloadTooLargeError    413
 ├── AuthenticationError          401  invalid_api_key
 ├── PermissionDeniedError        403
 ├── RateLimitError               429  (gateway budget / admission)
 ├── ServiceUnavailableError      503  (no allowed backend can take the request)
 └── UpstreamError                502  the upstream failed or answered with an error
      ├── UpstreamTimeoutError    504
      ├── UpstreamRateLimitError  429  the upstream is rate limited (retry-after relayed)
      └── UpstreamClientError     400/413/422  the upstream rejected the request itself
"""

from __future__ import annotations

from typing import Any

import orjson


class GatewayError(Exception):
    """Base class: carries the HTTP status and the OpenAI error fields."""

    status_code = 500
    error_type = "server_error"
    default_code: str | None = None
    #: Whether the client may succeed by sending the same request again.
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body_bytes(self) -> bytes:
        return orjson.dumps(self.body())

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        headers.setdefault("x-should-retry", "true" if self.retryable else "false")
        return headers


class InvalidRequestError(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class ModelNotFoundError(InvalidRequestError):
    status_code = 404
    default_code = "model_not_found"


class NotFoundError(InvalidRequestError):
    status_code = 404


class MethodNotAllowedError(InvalidRequestError):
    status_code = 405


class PayloadTooLargeError(InvalidRequestError):
    status_code = 413
    default_code = "request_too_large"


class AuthenticationError(GatewayError):
    status_code = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    status_code = 403
    error_type = "invalid_request_error"
    default_code = "permission_denied"


class RateLimitError(GatewayError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class ServiceUnavailableError(GatewayError):
    status_code = 503
    error_type = "server_error"
    default_code = "no_backend_available"
    retryable = True


class UpstreamError(GatewayError):
    """The upstream failed. ``upstream_status`` is what it answered, if it answered."""

    status_code = 502
    error_type = "upstream_error"
    default_code = "upstream_error"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code, headers=headers)
        self.upstream_status = upstream_status
        if retryable is not None:
            self.retryable = retryable


class UpstreamTimeoutError(UpstreamError):
    status_code = 504
    error_type = "timeout_error"
    default_code = "upstream_timeout"


class UpstreamRateLimitError(UpstreamError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class UpstreamClientError(UpstreamError):
    """The upstream rejected the request itself (400/404/413/422): the client's fault, relayed as is."""

    error_type = "invalid_request_error"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(
            message, upstream_status=upstream_status, param=param, code=code, retryable=False
        )
        self.status_code = upstream_status
