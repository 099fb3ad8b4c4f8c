"""A scripted OpenAI-compatible server on loopback, for tests: no network, no model.

Each POST to `/v1/chat/completions` takes the next scripted reply (status, JSON or text body) and
is recorded (path, headers, JSON body), so a test asserts both what the client sent and what it
made of the answer. A request past the end of the script gets a 500 that names the problem.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # a dict is sent as JSON, a str as text
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait this long before answering (a slow or hung endpoint)


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any


def completion(
    content: str | None = None,
    tool_calls: list[tuple[str, Any]] | None = None,
    finish_reason: str | None = None,
    usage: dict[str, int] | None = None,
) -> Reply:
    """A 200 chat completion: `tool_calls` as (name, arguments), the arguments a dict (sent as
    its JSON text, as OpenAI does) or a raw string."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
            }
            for i, (name, args) in enumerate(tool_calls)
        ]
    reason = finish_reason or ("tool_calls" if tool_calls else "stop")
    return Reply(
        body={
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": "scripted",
            "choices": [{"index": 0, "message": message, "finish_reason": reason}],
            "usage": usage or {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
    )


class ScriptedLLM:
    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                with owner._lock:
                    owner.requests.append(
                        Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    reply = (
                        owner.script.pop(0)
                        if owner.script
                        else Reply(500, {"error": {"message": "the test's script has no reply left"}})
                    )
                if self.path != "/v1/chat/completions":
                    reply = Reply(404, {"error": {"message": f"no route {self.path}"}})
                data = reply.body.encode() if isinstance(reply.body, str) else json.dumps(reply.body).encode()
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                try:
                    self._answer(reply, data)
                except OSError:
                    pass  # the client gave up waiting (a test of its timeout)

            def _answer(self, reply: Reply, data: bytes) -> None:
                self.send_response(reply.status)
                kind = "text/plain" if isinstance(reply.body, str) else "application/json"
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(data)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> ScriptedLLM:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def load(self, *replies: Reply) -> None:
        with self._lock:
            self.script = list(replies)
            self.requests.clear()
