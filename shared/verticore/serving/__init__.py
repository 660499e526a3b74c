"""Serving layer shared by every app's HTTP API: request-size limits (more to come: keys, quotas, metering)."""
from .body_limit import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware, add_body_limit

__all__ = ["DEFAULT_MAX_BODY_BYTES", "BodyLimitMiddleware", "add_body_limit"]
