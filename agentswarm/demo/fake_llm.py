"""An OpenAI-compatible chat server on loopback: scripted replies, injected faults, or the swarm simulator.

Run it alone with `python -m agentswarm.demo.fake_llm --port 8999` (the simulator answers; SIM_FAULTS and
SIM_FAULT_ATTEMPTS in the environment make its worker break branches on purpose, see sim_faults).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agentswarm.demo.completions import ScriptError, completion, normalize_reply, stream_chunks
from agentswarm.demo.faults import Fault
from agentswarm.llm import Usage

log = logging.getLogger("agentswarm.fake_llm")

Script = list[Any] | Callable[[dict], Any] | None
Faults = list[Fault] | Callable[[dict], Fault | None] | None


class FakeLLMServer:
    """A real HTTP server speaking /v1/chat/completions and /v1/models; use as a context manager."""

    def __init__(
        self,
        script: Script = None,
        *,
        simulator: Callable[[dict], Any] | None = None,
        latency_s: float = 0.0,
        faults: Faults = None,
        model: str = "fake-glm",
        port: int = 0,
        host: str = "127.0.0.1",
        sim_faults: dict[str, float] | None = None,
        sim_fault_attempts: int = 0,
    ) -> None:
        if script is not None and not (isinstance(script, list) or callable(script)):
            raise TypeError(f"script must be a list or a callable, got {type(script).__name__}")
        if faults is not None and not (isinstance(faults, list) or callable(faults)):
            raise TypeError(f"faults must be a list or a callable, got {type(faults).__name__}")
        if latency_s < 0:
            raise ValueError(f"latency_s must be >= 0, got {latency_s}")
        if sim_faults and (simulator is not None or script is not None):
            raise ValueError("sim_faults only applies to the built-in simulator (no script, no simulator)")
        if simulator is None and script is None:
            from agentswarm.demo.simulator import simulate

            simulator = functools.partial(simulate, faults=dict(sim_faults), fault_attempts=sim_fault_attempts) \
                if sim_faults else simulate
        self._script_queue: deque[Any] | None = deque(script) if isinstance(script, list) else None
        self._script_fn = script if callable(script) else None
        self._scripted = len(script) if isinstance(script, list) else 0
        self._simulator = simulator
        self._fault_queue: deque[Fault] | None = deque(faults) if isinstance(faults, list) else None
        self._fault_fn = faults if callable(faults) else None
        self.latency_s = latency_s
        self.model = model
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._requests: list[dict] = []
        self._headers: list[dict[str, str]] = []
        self._usage = Usage()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeLLMServer:
        """Bind and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            raise RuntimeError("FakeLLMServer already started")
        handler = type("BoundHandler", (_Handler,), {"fake": self})
        self._httpd = _Server((self._host, self._port), handler)
        # A short poll interval makes stop() prompt; the default 0.5 s adds up over a test suite.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="fake-llm",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (hanging requests are woken and dropped)."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port."""
        if self._httpd is None:
            raise RuntimeError("FakeLLMServer is not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """Base URL without /v1, e.g. http://127.0.0.1:54321."""
        return f"http://{self._host}:{self.port}"

    @property
    def requests(self) -> list[dict]:
        """A copy of every JSON body received on /v1/chat/completions, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def request_headers(self) -> list[dict[str, str]]:
        """The headers of each chat request, parallel to `requests`."""
        with self._lock:
            return [dict(h) for h in self._headers]

    @property
    def usage_total(self) -> Usage:
        """Token usage summed over the successful chat replies."""
        with self._lock:
            return Usage(self._usage.prompt_tokens, self._usage.completion_tokens)

    # -- deciding ----------------------------------------------------------------------------

    def _record(self, body: dict, headers: dict[str, str]) -> int:
        with self._lock:
            self._requests.append(body)
            self._headers.append(headers)
            return len(self._requests)

    def _next_fault(self, body: dict) -> Fault | None:
        if self._fault_fn is not None:
            return self._fault_fn(body)
        with self._lock:
            return self._fault_queue.popleft() if self._fault_queue else None

    def _next_reply(self, body: dict, req_no: int) -> Any:
        if self._script_queue is not None:
            with self._lock:
                if not self._script_queue:
                    raise ScriptError(
                        f"fake LLM script exhausted: {self._scripted} replies were scripted and request "
                        f"#{req_no} has none left"
                    )
                return self._script_queue.popleft()
        if self._script_fn is not None:
            return self._script_fn(body)
        assert self._simulator is not None
        return self._simulator(body)

    def _add_usage(self, usage: dict) -> None:
        with self._lock:
            self._usage = self._usage + Usage(usage["prompt_tokens"], usage["completion_tokens"])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 stalls a swarm's burst of connects for a second


class _Handler(BaseHTTPRequestHandler):
    fake: FakeLLMServer
    protocol_version = "HTTP/1.1"
    server_version = "FakeLLM/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        send_json(self, status, payload, headers)

    def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self._send_json(status, {"error": {"message": message, "type": kind, "code": status}})

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send_json(200, {"object": "list", "data": [
                {"id": self.fake.model, "object": "model", "created": 0, "owned_by": "agentswarm"}]})
        elif self.path.rstrip("/") == "/health":
            self._send_json(200, {"status": "ok"})
        else:
            self._error(404, f"no route GET {self.path}")

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._error(404, f"no route POST {self.path}")
            return
        try:
            body = json.loads(raw or b"null")
        except json.JSONDecodeError as exc:
            self._error(400, f"request body is not JSON: {exc.msg}")
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            self._error(400, "request body must be an object with a non-empty 'messages' list")
            return
        req_no = self.fake._record(body, dict(self.headers.items()))
        if self.fake.latency_s:
            self.fake._stopping.wait(self.fake.latency_s)
        try:
            fault = self.fake._next_fault(body)
            reply = fault if fault is not None else normalize_reply(self.fake._next_reply(body, req_no))
        except ScriptError as exc:
            self._error(500, str(exc), "fake_script_error")
            return
        except Exception as exc:  # a broken script callable or simulator must answer, not kill the thread
            log.exception("fake LLM reply failed")
            self._error(500, f"fake LLM reply failed: {type(exc).__name__}: {exc}", "fake_script_error")
            return
        if isinstance(reply, Fault):
            self._fault(reply, body, req_no)
            return
        full = completion(reply, body, self.fake.model, req_no, int(time.time()))
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(stream_chunks(full, include_usage))
        else:
            self._send_json(200, full)
        if "usage" in full:
            self.fake._add_usage(full["usage"])

    def _stream(self, chunks: list[dict], *, cut: bool = False, bad: bool = False, stall_s: float = 0.0) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # the body ends when the connection does, as SSE servers do
        self.end_headers()
        self.close_connection = True
        if bad:
            self.wfile.write(b'data: {"id": "chatcmpl-fake", "choices": [{"delta": {"content": "hal\n\n')
            return
        # A cut stream stops before the finish chunk, as when an upstream worker dies mid-answer.
        sent = chunks[: max(1, (len(chunks) - 2) // 2)] if cut else chunks
        for chunk in sent:
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()
        if stall_s:
            self.fake._stopping.wait(stall_s)
        elif not cut:
            self.wfile.write(b"data: [DONE]\n\n")

    def _fault(self, fault: Fault, body: dict, req_no: int) -> None:
        stream = bool(body.get("stream"))
        if fault.kind == "rate_limit":
            headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
            self._send_json(429, {"error": {"message": fault.message, "type": "rate_limit_error", "code": 429}},
                            headers)
        elif fault.kind == "server_error":
            self._error(fault.status, fault.message, "server_error")
        elif fault.kind == "echo_auth":
            self._error(fault.status, f"{fault.message}: got Authorization={self.headers.get('Authorization')!r}")
        elif fault.kind == "stall" and stream:
            full = completion({"content": "This answer stops half way.", "tool_calls": []},
                              body, self.fake.model, req_no, int(time.time()))
            self._stream(stream_chunks(full, True), cut=True, stall_s=fault.seconds)
        elif fault.kind in ("hang", "stall"):
            self.fake._stopping.wait(fault.seconds)
            self.close_connection = True  # drop without a word
        elif fault.kind == "malformed_json":
            if stream:
                self._stream([], bad=True)
            else:
                self._send_json(200, b'{"id": "chatcmpl-fake", "choices": [{"message": {"content": "hal')
        elif fault.kind == "truncated":
            full = completion({"content": "This answer will be cut off in the middle.", "tool_calls": []},
                              body, self.fake.model, req_no, int(time.time()))
            if stream:
                self._stream(stream_chunks(full, True), cut=True)
            else:
                raw = json.dumps(full).encode()
                self._send_json(200, raw[: len(raw) // 2])


def serve_forever(port: int, host: str = "127.0.0.1", latency_s: float = 0.0,
                  sim_faults: dict[str, float] | None = None, sim_fault_attempts: int | None = None) -> None:
    """Run the simulator-backed fake LLM in the foreground until Ctrl-C.

    The worker's faults come from the arguments, or else from SIM_FAULTS and SIM_FAULT_ATTEMPTS in the
    environment (a bad value exits with one line naming the variable).
    """
    from agentswarm.demo.sim_faults import describe, faults_from_env

    if sim_faults is None or sim_fault_attempts is None:
        try:
            env_faults, env_attempts = faults_from_env()
        except ValueError as exc:
            raise SystemExit(f"fake LLM: {exc}") from None
        sim_faults = env_faults if sim_faults is None else sim_faults
        sim_fault_attempts = env_attempts if sim_fault_attempts is None else sim_fault_attempts
    server = FakeLLMServer(latency_s=latency_s, port=port, host=host, sim_faults=sim_faults,
                           sim_fault_attempts=sim_fault_attempts).start()
    print(f"fake LLM (swarm simulator) listening on {server.url}/v1 — Ctrl-C to stop", flush=True)
    if sim_faults:
        print(f"fake LLM: {describe(sim_faults, sim_fault_attempts)}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: python -m agentswarm.demo.fake_llm --port N (faults from SIM_FAULTS)."""
    parser = argparse.ArgumentParser(prog="python -m agentswarm.demo.fake_llm", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="TCP port (0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every reply")
    args = parser.parse_args(argv)
    if args.latency < 0:
        parser.error("--latency must be >= 0")
    serve_forever(args.port, args.host, args.latency)



def send_json(handler: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
    """One whole JSON response (bytes are sent as they are), with its length and any extra headers."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(raw)))
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(raw)


if __name__ == "__main__":
    main()

