"""Serving layer shared by every app's HTTP API.

Apps code against four names::

    from verticore.serving import Principal, ServingSettings, install_serving, require_scope

``install_serving(app, settings)`` adds API-key auth state, request ids, JSON access logs,
usage metering, per-key rate limits and daily quotas, Prometheus ``/metrics``, the streaming
body limit, 503 on full batch queues and a graceful shutdown. ``require_scope("rec:read")`` is
the FastAPI dependency that guards a route. :class:`MicroBatcher` merges concurrent requests
into one model call.
"""
from .auth import (
                   AUTH_DISABLED,
                   Principal,
                   ServingSettings,
                   ServingState,
                   authorize,
                   install_serving,
                   require_scope,
                   serving_state,
)
from .batching import MicroBatcher, QueueFullError
from .body_limit import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware, add_body_limit
from .keys import SCOPES, KeyRecord, KeyStore
from .metering import Meter, query_usage

__all__ = ["AUTH_DISABLED", "DEFAULT_MAX_BODY_BYTES", "SCOPES", "BodyLimitMiddleware", "KeyRecord", "KeyStore", "Meter",
           "MicroBatcher", "Principal", "QueueFullError", "ServingSettings", "ServingState", "add_body_limit",
           "authorize", "install_serving", "query_usage", "require_scope", "serving_state"]
