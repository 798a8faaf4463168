#!/usr/bin/env python3
"""A small OpenAI-compatible model server: the backend of the integration tests and the demo.

Answers like a vLLM server, cheaply, and lets a test change its behaviour at run time.

  GET  /v1/models            OpenAI model list naming MODEL
  POST /v1/chat/completions  {"messages": [...], "stream": bool, "max_tokens": N}; the reply is
                             "tok0 tok1 ... tokN-1" (N = max_tokens, else --tokens), after N
                             token delays. Streamed as Server-Sent Events: a first chunk with the
                             role, one chat.completion.chunk per token (its index also in
                             "token_index"), each after --token-delay-ms, a last chunk with
                             finish_reason, then "data: [DONE]".
  GET  /whoami               the backend name, as text
  GET  /health               the mode, as text: 200, or 503 in mode error
  GET  /metrics              Prometheus text with vLLM's names, labelled model_name="MODEL":
                             gauges vllm:num_requests_waiting (0), vllm:num_requests_running (the
                             chat completions in flight), vllm:kv_cache_usage_perc (running/100,
                             at most 1); counters vllm:request_success_total and
                             switchyard_test_request_errors_total (error answers to /v1/* and
                             to unknown paths)
  POST /admin/metrics        {"vllm:num_requests_waiting": 10, ...} overrides metric values (any
                             name; a new name is exported as a gauge); null removes an override
  POST /admin/mode           {"mode": "ok" | "hang" | "wrong_model" | "error" | "no_metrics"}
                               hang:        accept connections, read requests, never answer them
                                            (open streams stall too) until the mode changes;
                                            /admin/* still answers
                               wrong_model: /v1/models lists "not-MODEL"
                               error:       /v1/* answer 503
                               no_metrics:  /metrics answers 503
  POST /admin/token_delay    {"ms": N}
  GET  /admin/state          mode, token delay, overrides and counters, as JSON

Every response carries "X-Backend: NAME" (NAME defaults to the first address, as bound), and the
completion bodies carry it as "system_fingerprint", so a test can tell which backend answered.
With --admin-token TOKEN, /admin/* needs "Authorization: Bearer TOKEN" (or "X-Admin-Token:
TOKEN"); the default, none, leaves them open.

Listens on every --listen address (e.g. a backend's own address and the VIP, for direct server
return; [::1]:8000 for IPv6; port 0 picks a free port). Prints "listening ADDR:PORT" for each
address, then "ready" once all are bound; exits 0 promptly on SIGTERM or SIGINT, open streams or
not. A bad argument or an address it cannot bind: a message on stderr and exit status 2.

usage: model_server.py --listen ADDR:PORT [--listen ADDR:PORT ...] --model NAME
                       [--name BACKEND_NAME] [--token-delay-ms 5] [--tokens 20]
                       [--admin-token none]
"""
import argparse
import http.server
import ipaddress
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
import uuid

MODES = ("ok", "hang", "wrong_model", "error", "no_metrics")
MAX_BODY = 16 << 20


class State:
    """Everything the handlers share, behind one lock."""

    def __init__(self, model: str, name: str, token_delay_ms: float, tokens: int, admin_token):
        self.model = model
        self.name = name
        self.tokens = tokens
        self.admin_token = admin_token
        self.lock = threading.Lock()
        # Notified when the mode changes or the server stops (wakes hung requests and streams).
        self.changed = threading.Condition(self.lock)
        self.stopping = False
        self.mode = "ok"
        self.token_delay_ms = token_delay_ms
        self.overrides = {}
        self.requests_served = 0
        self.requests_hung = 0
        self.running = 0
        self.streams_open = 0
        self.success_total = 0
        self.errors_total = 0
        self.started = time.time()

    def get_mode(self) -> str:
        with self.lock:
            return self.mode

    def wait_unhung(self) -> bool:
        """Blocks while the mode is hang; False when the server is stopping."""
        with self.lock:
            if self.mode == "hang":
                self.requests_hung += 1
            while self.mode == "hang" and not self.stopping:
                self.changed.wait()
            return not self.stopping

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            self.changed.notify_all()

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "name": self.name,
                "model": self.model,
                "mode": self.mode,
                "token_delay_ms": self.token_delay_ms,
                "tokens": self.tokens,
                "overrides": dict(self.overrides),
                "requests_served": self.requests_served,
                "requests_hung": self.requests_hung,
                "requests_running": self.running,
                "streams_open": self.streams_open,
                "request_success_total": self.success_total,
                "request_errors_total": self.errors_total,
                "uptime_s": round(time.time() - self.started, 3),
            }


def fmt_value(v) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    f = float(v)
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    return repr(f)


def metrics_text(st: State) -> str:
    with st.lock:
        running = st.running
        base = {
            "vllm:num_requests_waiting": ("gauge", "Number of requests waiting to be processed.", 0),
            "vllm:num_requests_running": ("gauge", "Number of requests in model execution batches.",
                                          running),
            "vllm:kv_cache_usage_perc": ("gauge", "KV-cache usage. 1 means 100 percent usage.",
                                         min(1.0, running / 100.0)),
            "vllm:request_success_total": ("counter", "Count of successfully processed requests.",
                                           st.success_total),
            "switchyard_test_request_errors_total": (
                "counter", "Requests answered with an error by the test model server.",
                st.errors_total),
        }
        overrides = dict(st.overrides)
    label = '{model_name="%s"}' % st.model.replace("\\", "\\\\").replace('"', '\\"')
    out = []
    for name, (kind, help_text, value) in base.items():
        value = overrides.pop(name, value)
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        out.append(f"{name}{label} {fmt_value(value)}")
    for name, value in sorted(overrides.items()):
        out.append(f"# HELP {name} Set through /admin/metrics.")
        out.append(f"# TYPE {name} gauge")
        out.append(f"{name}{label} {fmt_value(value)}")
    return "\n".join(out) + "\n"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY each small answer waits
    # out the client's delayed ACK (about 40 ms), and so does every streamed event.
    disable_nagle_algorithm = True
    server_version = "switchyard-model-server/1"

    def version_string(self) -> str:
        return self.server_version

    @property
    def st(self) -> State:
        return self.server.state

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass

    # ---- plumbing -------------------------------------------------------------------------

    def send_body(self, status: int, body: bytes, ctype: str, extra=()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", self.st.name)
        for k, v in extra:
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def send_json(self, status: int, obj) -> None:
        self.send_body(status, (json.dumps(obj) + "\n").encode(), "application/json")

    def send_text(self, status: int, text: str, ctype="text/plain; charset=utf-8") -> None:
        self.send_body(status, text.encode(), ctype)

    def send_error_json(self, status: int, message: str, count=True) -> None:
        if count:
            with self.st.lock:
                self.st.errors_total += 1
        kind = "invalid_request_error" if status < 500 else "server_error"
        self.send_json(status, {"error": {"message": message, "type": kind, "code": status}})

    def read_body(self):
        """The request body (Content-Length or chunked), or None after answering an error."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            total = 0
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    self.close_connection = True
                    self.send_error_json(413, "body too large")
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            self.close_connection = True
            self.send_error_json(400, "bad Content-Length")
            return None
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            self.send_error_json(413, "body too large")
            return None
        return self.rfile.read(length) if length else b""

    def read_json(self):
        body = self.read_body()
        if body is None:
            return None
        try:
            obj = json.loads(body or b"{}")
        except ValueError as e:
            self.send_error_json(400, f"body is not JSON: {e}")
            return None
        if not isinstance(obj, dict):
            self.send_error_json(400, "body must be a JSON object")
            return None
        return obj

    def admin_allowed(self) -> bool:
        token = self.st.admin_token
        if token is None:
            return True
        auth = self.headers.get("Authorization", "")
        if auth == f"Bearer {token}" or self.headers.get("X-Admin-Token") == token:
            return True
        self.send_error_json(401, "admin token required", count=False)
        return False

    def dispatch(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith("/admin/"):
            if self.admin_allowed():
                self.admin(path)
            return
        # hang: the request has been read; answer nothing until the mode changes.
        if self.st.get_mode() == "hang" and not self.st.wait_unhung():
            self.close_connection = True
            return
        with self.st.lock:
            self.st.requests_served += 1
        route = (self.command, path)
        if route in (("GET", "/v1/models"), ("HEAD", "/v1/models")):
            self.models()
        elif route == ("POST", "/v1/chat/completions"):
            self.chat()
        elif route in (("GET", "/whoami"), ("HEAD", "/whoami")):
            self.send_text(200, self.st.name + "\n")
        elif route in (("GET", "/metrics"), ("HEAD", "/metrics")):
            if self.st.get_mode() == "no_metrics":
                self.send_text(503, "metrics unavailable (mode no_metrics)\n")
            else:
                self.send_text(200, metrics_text(self.st), "text/plain; version=0.0.4; charset=utf-8")
        elif route in (("GET", "/health"), ("HEAD", "/health")):
            mode = self.st.get_mode()
            self.send_text(503 if mode == "error" else 200, mode + "\n")
        elif path in ("/v1/models", "/v1/chat/completions", "/whoami", "/metrics", "/health"):
            self.read_body()
            self.send_error_json(405, f"{self.command} not allowed on {path}")
        else:
            self.read_body()
            self.send_error_json(404, f"no route {path}")

    def do_GET(self):
        self.dispatch()

    def do_HEAD(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    # ---- OpenAI ---------------------------------------------------------------------------

    def models(self) -> None:
        mode = self.st.get_mode()
        if mode == "error":
            self.send_error_json(503, "model server unavailable (mode error)")
            return
        model = "not-" + self.st.model if mode == "wrong_model" else self.st.model
        self.send_json(200, {
            "object": "list",
            "data": [{"id": model, "object": "model", "created": int(self.st.started),
                      "owned_by": "switchyard-test"}],
        })

    def chat(self) -> None:
        req = self.read_json()
        if req is None:
            return
        if self.st.get_mode() == "error":
            self.send_error_json(503, "model server unavailable (mode error)")
            return
        if not isinstance(req.get("messages"), list):
            self.send_error_json(400, '"messages" must be a list')
            return
        n = req.get("max_tokens")
        if n is None:
            n = req.get("max_completion_tokens", self.st.tokens)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0 or n > 1_000_000:
            self.send_error_json(400, '"max_tokens" must be an integer from 0 to 1000000')
            return
        stream = bool(req.get("stream", False))
        with self.st.lock:
            self.st.running += 1
            if stream:
                self.st.streams_open += 1
        try:
            if stream:
                self.chat_stream(n, req)
            else:
                self.chat_whole(n, req)
        finally:
            with self.st.lock:
                self.st.running -= 1
                if stream:
                    self.st.streams_open -= 1

    def usage(self, req, n: int) -> dict:
        prompt = sum(len(str(m.get("content", "")).split()) if isinstance(m, dict) else 1
                     for m in req["messages"])
        return {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}

    def chat_whole(self, n: int, req) -> None:
        # A whole completion takes as long as its tokens would have, like a real server.
        for _ in range(n):
            if not self.token_pause():
                self.close_connection = True
                return
        with self.st.lock:
            self.st.success_total += 1
        self.send_json(200, {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.st.model,
            "system_fingerprint": self.st.name,
            "backend": self.st.name,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(f"tok{i}" for i in range(n))},
                "finish_reason": "length",
            }],
            "usage": self.usage(req, n),
        })

    def token_pause(self) -> bool:
        """Waits one token delay (and while hung); False when the server is stopping.

        Reads mode and delay without the lock (an attribute read is atomic): this runs once per
        token of every stream. A plain sleep is enough, as SIGTERM ends the process outright.
        """
        delay = self.st.token_delay_ms
        if delay > 0:
            time.sleep(delay / 1000.0)
        if self.st.stopping:
            return False
        return self.st.mode != "hang" or self.st.wait_unhung()

    def chat_stream(self, n: int, req) -> None:
        chunked = self.request_version == "HTTP/1.1"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Backend", self.st.name)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.flush()

        def emit(data: str) -> None:
            raw = f"data: {data}\n\n".encode()
            if chunked:
                raw = b"%x\r\n%s\r\n" % (len(raw), raw)
            self.wfile.write(raw)
            self.wfile.flush()

        cid = "chatcmpl-" + uuid.uuid4().hex
        created = int(time.time())
        model, name = self.st.model, self.st.name

        def chunk(delta, finish=None, **extra) -> str:
            return json.dumps({
                "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": name, "backend": name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra,
            })

        # A token chunk is token_head + text + token_mid + index + "}" (the text goes where the
        # template's NUL, which json.dumps writes as \u0000, is; the index replaces "-1}").
        token_head, token_mid = chunk({"content": "\0"}, token_index=-1).split("\\u0000")
        token_mid = token_mid[:-len("-1}")]
        try:
            emit(chunk({"role": "assistant", "content": ""}))
            for i in range(n):
                if not self.token_pause():
                    self.close_connection = True
                    return
                # Equal to chunk({"content": text}, token_index=i), without a json.dumps per token.
                text = f"tok{i}" if i == 0 else f" tok{i}"
                emit(f"{token_head}{text}{token_mid}{i}}}")
            emit(chunk({}, finish="length", usage=self.usage(req, n)))
            emit("[DONE]")
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        with self.st.lock:
            self.st.success_total += 1

    # ---- admin ----------------------------------------------------------------------------

    def admin(self, path: str) -> None:
        st = self.st
        if self.command == "GET" and path == "/admin/state":
            self.send_json(200, st.snapshot())
            return
        if self.command != "POST" or path not in ("/admin/metrics", "/admin/mode",
                                                  "/admin/token_delay"):
            self.read_body()
            self.send_error_json(404, f"no admin route {self.command} {path}", count=False)
            return
        req = self.read_json()
        if req is None:
            return
        if path == "/admin/metrics":
            for k, v in req.items():
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    self.send_error_json(400, f"{k}: value must be a number or null", count=False)
                    return
                if not valid_metric_name(k):
                    self.send_error_json(400, f"{k!r} is not a Prometheus metric name",
                                         count=False)
                    return
            with st.lock:
                for k, v in req.items():
                    if v is None:
                        st.overrides.pop(k, None)
                    else:
                        st.overrides[k] = v
        elif path == "/admin/mode":
            mode = req.get("mode")
            if mode not in MODES:
                self.send_error_json(400, f"mode must be one of {', '.join(MODES)}", count=False)
                return
            with st.lock:
                st.mode = mode
                st.changed.notify_all()
        else:
            ms = req.get("ms")
            if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not 0 <= ms <= 3_600_000:
                self.send_error_json(400, '"ms" must be a number from 0 to 3600000', count=False)
                return
            with st.lock:
                st.token_delay_ms = ms
        self.send_json(200, st.snapshot())


def valid_metric_name(name: str) -> bool:
    if not name or not (name[0].isascii() and (name[0].isalpha() or name[0] in "_:")):
        return False
    return all(c.isascii() and (c.isalnum() or c in "_:") for c in name)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, addr, family, state: State):
        self.address_family = family
        self.state = state
        super().__init__(addr, Handler, bind_and_activate=False)
        if family == socket.AF_INET6:
            # [::]:port is IPv6 only; add 0.0.0.0:port for IPv4.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            self.server_bind()
            self.server_activate()
        except BaseException:
            self.server_close()
            raise

    def handle_error(self, request, client_address):
        # A client that goes away mid-answer is normal here; anything else is worth a traceback.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    def server_bind(self):
        # Skip HTTPServer.server_bind's getfqdn (a DNS lookup per listener).
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def parse_listen(text: str):
    """ADDR:PORT or [V6ADDR]:PORT -> (family, (host, port))."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError("expected [ADDR]:PORT")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError("expected ADDR:PORT")
        if ":" in host:
            raise ValueError("an IPv6 address needs brackets: [::1]:8000")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"bad port {port!r}")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"bad address {host!r}: expected an IP address") from None
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return family, (str(ip), int(port))


def main() -> None:
    class Parser(argparse.ArgumentParser):
        def error(self, message):
            self.print_usage(sys.stderr)
            print(f"model_server.py: error: {message}", file=sys.stderr, flush=True)
            sys.exit(2)

    p = Parser(description="OpenAI-compatible test model server.")
    p.add_argument("--listen", action="append", required=True, metavar="ADDR:PORT",
                   help="address to listen on; repeat for several; [::1]:8000 for IPv6")
    p.add_argument("--model", required=True, help="the model name served")
    p.add_argument("--name", help="backend name for X-Backend (default: the first --listen)")
    p.add_argument("--token-delay-ms", type=float, default=5.0, metavar="MS")
    p.add_argument("--tokens", type=int, default=20, help="completion length without max_tokens")
    p.add_argument("--admin-token", default="none",
                   help='token required by /admin/* ("none": no token)')
    args = p.parse_args()
    if not args.model:
        p.error("--model is empty")
    if args.tokens < 0:
        p.error("--tokens must be at least 0")
    if not 0 <= args.token_delay_ms <= 3_600_000:
        p.error("--token-delay-ms must be from 0 to 3600000")
    listens = []
    for text in args.listen:
        try:
            listens.append(parse_listen(text))
        except ValueError as e:
            p.error(f"--listen {text}: {e}")
    state = State(args.model, args.name, args.token_delay_ms, args.tokens,
                  None if args.admin_token == "none" else args.admin_token)

    servers = []
    for text, (family, addr) in zip(args.listen, listens):
        try:
            servers.append(Server(addr, family, state))
        except OSError as e:
            print(f"model_server.py: cannot listen on {text}: {e.strerror or e}",
                  file=sys.stderr, flush=True)
            sys.exit(2)

    def stop(*_):
        state.stop()
        for s in servers:
            try:
                s.socket.close()
            except OSError:
                pass
        snap = state.snapshot()
        print(f"stopped served={snap['requests_served']} streams_open={snap['streams_open']}",
              flush=True)
        # Threads serving open streams are daemons; do not wait for them or for interpreter
        # teardown.
        os._exit(0)

    bound = []
    for s in servers:
        host, port = s.server_address[:2]
        bound.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    if state.name is None:
        state.name = bound[0]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for s, text in zip(servers, bound):
        print(f"listening {text}")
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2},
                         daemon=True).start()
    print("ready", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
