"""A small fake OpenAI-compatible inference engine on 127.0.0.1, for the tests of textgen/remote.

It answers GET /v1/models and POST /v1/completions the way vLLM does (server-sent events in chunked HTTP/1.1,
`logprobs` with tokens, token_logprobs and top_logprobs, `echo` for scoring), and can be told to misbehave:

    with FakeEngine(tokens=["Hel", "lo"]) as fake:   # fake.url == "http://127.0.0.1:PORT/v1"
        fake.mode = "slow_first"     # or: "ok", "http_error", "garbage", "die", "stall", "no_done"
        fake.refuse = {"top_k"}      # answer HTTP 400 naming these fields, as vLLM's validation does
        fake.requests                # every JSON body it was sent
        fake.aborted.wait(2)         # set when a client closed a stream before its end

    python tests/fake_engine.py      # serves one on a free port until Ctrl-C (prints its URL)
"""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeEngine:
    def __init__(self, tokens: list[str] | None = None, model: str = "org/fake-model", delay: float = 0.0,
                 port: int = 0):
        self.model = model
        self.tokens = tokens or [" once", " upon", " a", " time", ",", " a", " fox", "."]
        self.texts: list[str] | None = None  # the `text` of each chunk, when it differs from the token
        self.token_bytes: list[list[int]] | None = None  # per-token bytes, sent as logprobs.bytes when set
        self.delay = delay  # seconds between chunks
        self.mode = "ok"
        self.refuse: set[str] = set()
        self.api_key: str | None = None  # when set, requests without this bearer token get HTTP 401
        self.echo_supported = True
        self.chat_template = True  # False: its model has none, and /chat/completions is refused as vLLM does
        self.context = 256  # its model's max_model_len; a longer echo prompt (one token a character) is refused
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.aborted = threading.Event()
        self.chunks_sent = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> FakeEngine:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeEngine:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def logprob(self, i: int) -> float:
        return math.log(0.5 / (1 + i % 3))  # 0.5, 0.25, 0.1667, ...


def _handler(fake: FakeEngine):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _json(self, status: int, doc: object) -> None:
            raw = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _authorised(self) -> bool:
            self.headers_seen = dict(self.headers)
            fake.headers.append(self.headers_seen)
            if fake.api_key and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                self._json(401, {"error": {"message": "Invalid API key", "type": "auth", "code": 401}})
                return False
            return True

        def do_GET(self) -> None:
            if not self._authorised():
                return
            if self.path != "/v1/models":
                self._json(404, {"error": {"message": "not found", "code": 404}})
            elif fake.mode == "garbage":
                self._json(200, ["not", "a", "model", "list"])
            else:
                self._json(200, {"object": "list", "data": [{"id": fake.model, "object": "model",
                                                              "max_model_len": fake.context}]})

        def do_POST(self) -> None:
            if not self._authorised():
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fake.requests.append(body)
            refused = sorted(f for f in fake.refuse if f in body)
            if refused:
                self._json(400, {"error": {"message": f"unsupported parameter {refused[0]}", "type": "BadRequestError",
                                           "param": refused[0], "code": 400}})
                return
            if fake.mode == "http_error":
                self._json(500, {"error": {"message": "the GPU caught fire", "code": 500}})
                return
            if body.get("echo"):
                self._echo(body)
                return
            if self.path.endswith("/chat/completions") and not fake.chat_template:  # vLLM's (transformers') words
                self._json(400, {"error": {"message": "As of transformers v4.44, default chat template is no longer "
                                           "allowed, so you must provide a chat template if the tokenizer does "
                                           "not define one.", "code": 400}})
                return
            if fake.mode == "slow_first":
                time.sleep(30)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                self._stream(body)
            except (BrokenPipeError, ConnectionResetError):
                fake.aborted.set()

        def _send(self, data: str) -> None:
            raw = data.encode()
            self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
            self.wfile.flush()

        def _stream(self, body: dict) -> None:
            chat = self.path.endswith("/chat/completions")
            n = min(int(body.get("max_tokens", 16)), len(fake.tokens))
            k = int(body.get("top_logprobs") or 0) if chat else int(body.get("logprobs") or 0)
            for i in range(n):
                if fake.mode == "garbage" and i == 2:
                    self._send("data: {this is not json\n\n")
                    return
                if fake.mode == "die" and i == 2:
                    self.wfile.flush()
                    self.connection.shutdown(2)  # the engine's process died: the connection just ends
                    return
                if fake.mode == "stall" and i == 2:
                    time.sleep(30)
                token = fake.tokens[i]
                text = fake.texts[i] if fake.texts is not None else token
                lp = fake.logprob(i)
                top = {token: lp, **{f"alt{j}": lp - 1 - j for j in range(max(0, k - 1))}}
                logprobs = {"tokens": [token], "token_logprobs": [lp], "top_logprobs": [top], "text_offset": [0]}
                if fake.token_bytes is not None:
                    logprobs["bytes"] = [fake.token_bytes[i]]
                last = i == n - 1
                choice = {"index": 0, "text": text, "logprobs": logprobs,
                          "finish_reason": ("length" if n == int(body.get("max_tokens", 16)) else "stop")
                          if last else None, "stop_reason": None, "token_ids": [100 + i]}
                if chat:  # OpenAI's chat shape: the text in a delta, log-probabilities as a list of records
                    record = {"token": token, "logprob": lp, "bytes": list(token.encode()),
                              "top_logprobs": [{"token": t, "logprob": v} for t, v in top.items()]}
                    choice = {"index": 0, "delta": {"content": text}, "logprobs": {"content": [record]},
                              "finish_reason": choice["finish_reason"], "stop_reason": None}
                for sample in range(int(body.get("n", 1))):
                    self._send("data: " + json.dumps({"object": "text_completion", "model": fake.model,
                                                      "choices": [{**choice, "index": sample}]}) + "\n\n")
                fake.chunks_sent += 1
                if fake.delay:
                    time.sleep(fake.delay)
            self._send("data: " + json.dumps({"choices": [], "usage": {"prompt_tokens": 3}}) + "\n\n")
            if fake.mode != "no_done":
                self._send("data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")

        def _echo(self, body: dict) -> None:
            if not fake.echo_supported:
                self._json(400, {"error": {"message": "echo is not supported", "param": "echo", "code": 400}})
                return
            prompt = body["prompt"]
            if len(prompt) > fake.context:  # vLLM's words
                self._json(400, {"error": {"message": f"This model's maximum context length is {fake.context} "
                                           f"tokens. However, your request has {len(prompt)} input tokens.",
                                           "code": 400}})
                return
            # one token per character, each with log-probability log(0.5); the first has none
            lps = [None] + [math.log(0.5)] * (len(prompt) - 1)
            self._json(200, {"choices": [{"index": 0, "text": prompt, "finish_reason": "length", "logprobs": {
                "tokens": list(prompt), "token_logprobs": lps, "text_offset": list(range(len(prompt))),
                "top_logprobs": [None] * len(prompt)}}]})

    return Handler


if __name__ == "__main__":
    with FakeEngine(delay=0.05) as engine:
        print(engine.url, flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
