"""An OpenAI-compatible HTTP server on 127.0.0.1, answered by the offline models.

It speaks `POST /v1/chat/completions` as the OpenAI API does (bearer auth, `usage`
token counts), so the real `openai` client can be exercised end to end without a
key or a network: the tests and benchmarks point `OPENAI_BASE_URL` at it.
`models` maps the requested model name to the offline defect rate that answers it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count

from factory_dagster.models.offline import OfflineModel, estimate_tokens


class LocalOpenAIServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, models: Mapping[str, float], api_key: str = "local-test-key", port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.models = dict(models)
        self.api_key = api_key
        self.requests = 0
        self._ids = count(1)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def answer(self, body: dict) -> tuple[int, dict]:
        model = body.get("model")
        if model not in self.models:
            return 404, {
                "error": {
                    "message": f"The model '{model}' does not exist",
                    "type": "invalid_request_error",
                    "code": "model_not_found",
                }
            }
        messages = body.get("messages") or []
        text = OfflineModel(model, self.models[model]).complete(messages, seed_key=str(body.get("seed", "")))
        prompt_tokens = sum(estimate_tokens(str(m.get("content", ""))) for m in messages)
        completion_tokens = estimate_tokens(text)
        return 200, {
            "id": f"chatcmpl-local-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


class _Handler(BaseHTTPRequestHandler):
    server: LocalOpenAIServer

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.requests += 1
        if self.headers.get("Authorization") != f"Bearer {self.server.api_key}":
            return self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._send(404, {"error": {"message": f"unknown path {self.path}"}})
        length = int(self.headers.get("Content-Length", 0))
        try:
            body = json.loads(self.rfile.read(length))
        except json.JSONDecodeError:
            return self._send(400, {"error": {"message": "body is not JSON"}})
        self._send(*self.server.answer(body))

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        """Quiet: requests are counted, not printed."""


@contextmanager
def serving(models: Mapping[str, float], api_key: str = "local-test-key") -> Iterator[LocalOpenAIServer]:
    """Run a server on a free loopback port for the duration of the block."""
    server = LocalOpenAIServer(models, api_key)
    thread = threading.Thread(target=server.serve_forever, name="local-openai-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
