"""A small webhook receiver on loopback: records each alert event once (by idempotency key),
verifies signatures, and can be told to fail, hang or recover. Used by the tests and the demo,
and by ``finance-sentiment receiver`` to try a webhook configuration end to end."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .webhooks import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature


class LocalReceiver:
    """Threaded HTTP receiver on ``127.0.0.1:<port>`` (0 = a free port).

    ``mode``: ``ok`` (200), ``fail`` (503), ``hang`` (sleeps ``hang_s`` then answers 200 after
    *processing*, i.e. a timed-out-but-processed request), ``reject`` (400). ``processed`` holds
    each idempotency key's payload once; ``requests`` counts every request seen.
    """

    def __init__(self, port: int = 0, *, secret: str | None = None, mode: str = "ok", hang_s: float = 2.0) -> None:
        self.secret = secret
        self.mode = mode
        self.hang_s = hang_s
        self.processed: dict[str, dict[str, Any]] = {}
        self.requests = 0
        self.bad_signatures = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests += 1
                    mode = receiver.mode
                if receiver.secret is not None:
                    ok = verify_signature(receiver.secret, self.headers.get(TIMESTAMP_HEADER, ""), body,
                                          self.headers.get(SIGNATURE_HEADER, ""))
                    if not ok:
                        with receiver._lock:
                            receiver.bad_signatures += 1
                        return self._answer(401, {"error": "bad signature"})
                if mode == "fail":
                    return self._answer(503, {"error": "temporarily unavailable"})
                if mode == "reject":
                    return self._answer(400, {"error": "rejected"})
                key = self.headers.get(IDEMPOTENCY_HEADER) or ""
                try:
                    payload = json.loads(body)
                except json.JSONDecodeError:
                    return self._answer(400, {"error": "not JSON"})
                with receiver._lock:
                    duplicate = key in receiver.processed
                    if not duplicate:
                        receiver.processed[key] = payload
                if mode == "hang":
                    time.sleep(receiver.hang_s)
                self._answer(200, {"ok": True, "duplicate": duplicate})

            def _answer(self, code: int, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:  # client gave up (timeout): expected
                pass

        self.server = Server(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> "LocalReceiver":
        self._thread = threading.Thread(target=self.server.serve_forever, name="local-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "LocalReceiver":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
