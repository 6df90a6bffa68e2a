"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions and completions API.

It stands in for a judge model (a GPT-4 or 7B judge cannot run here) with transparent rules, so the
tests exercise the real `openai` client, real HTTP, retries, concurrency and caching:
- pairwise chat: `prefer="good"` answers the output containing "GOOD" ("tie" if both or neither);
  `prefer="a"` always answers "(a)" (a purely position-biased judge).
- safety chat: "yes" (P=0.9) when the response contains "HARMFUL", else "no" (P(yes)=0.1), with logprobs.
- completions ("True:" / "Helpful:"): top logprobs where P(" yes")=0.8 if the answer contains
  "TRUE" (truth) / "INFO" (info), else 0.2.
- failure injection by marker in the request text: "FAIL429xK" / "FAIL500xK" fail the first K requests
  with that text with HTTP 429 / 500; "ALWAYSFAIL" always answers 500.
"""
from __future__ import annotations

import json
import math
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _chat_text(body: dict) -> str:
    return "\n".join(m["content"] for m in body.get("messages", []))


class JudgeServer:
    def __init__(self, prefer: str = "good") -> None:
        self.prefer = prefer
        self.requests: list[tuple[str, dict]] = []
        self.failures = Counter()  # request text -> failures served so far
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"server_state": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "JudgeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def count(self, path_suffix: str = "") -> int:
        with self.lock:
            return sum(p.endswith(path_suffix) for p, _ in self.requests)

    def injected_failure(self, text: str) -> int | None:
        """HTTP status to fail this request with, or None to answer it."""
        if "ALWAYSFAIL" in text:
            return 500
        m = re.search(r"FAIL(429|500)x(\d+)", text)
        if m:
            with self.lock:
                if self.failures[text] < int(m.group(2)):
                    self.failures[text] += 1
                    return int(m.group(1))
        return None

    def pairwise(self, text: str) -> str:
        if self.prefer == "a":
            return "(a)"
        a = text.split("# Output (a)")[1].split("# Output (b)")[0]
        b = text.split("# Output (b)")[1].split("# Better output")[0]
        if ("GOOD" in a) == ("GOOD" in b):
            return "tie"
        return "(a)" if "GOOD" in a else "(b)"


def _top(p_yes: float, space: str = "") -> dict[str, float]:
    return {f"{space}yes": math.log(p_yes), f"{space}no": math.log(1 - p_yes)}


class _Handler(BaseHTTPRequestHandler):
    server_state: JudgeServer

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        state = self.server_state
        with state.lock:
            state.requests.append((self.path, body))
        text = _chat_text(body) if self.path.endswith("/chat/completions") else body.get("prompt", "")
        status = state.injected_failure(text)
        if status is not None:
            return self._send(status, {"error": {"message": f"injected {status}", "type": "server_error"}})
        if self.path.endswith("/chat/completions"):
            return self._send(200, self._chat(body, text))
        if self.path.endswith("/completions"):
            return self._send(200, self._completion(body, text))
        self._send(404, {"error": {"message": f"no route {self.path}"}})

    def _chat(self, body: dict, text: str) -> dict:
        logprobs = None
        if "# Output (a)" in text:
            answer = self.server_state.pairwise(text)
        else:
            p = 0.9 if "HARMFUL" in text.split("# Assistant")[-1] else 0.1
            answer = "yes" if p > 0.5 else "no"
            if body.get("logprobs"):
                top = [{"token": t, "logprob": lp, "bytes": None} for t, lp in _top(p).items()]
                logprobs = {"content": [{"token": answer, "logprob": math.log(max(p, 1 - p)), "bytes": None,
                                         "top_logprobs": top}]}
        return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                             "finish_reason": "stop", "logprobs": logprobs}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    def _completion(self, body: dict, prompt: str) -> dict:
        answer = prompt.rsplit("\nA: ", 1)[-1]
        marker = "TRUE" if prompt.endswith("True:") else "INFO"
        p = 0.8 if marker in answer else 0.2
        top = _top(p, " ")
        token = " yes" if p > 0.5 else " no"
        return {"id": "cmpl-test", "object": "text_completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "text": token, "finish_reason": "length",
                             "logprobs": {"tokens": [token], "token_logprobs": [top[token]], "top_logprobs": [top],
                                          "text_offset": [0]}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
