"""`negotiax serve` as a real subprocess: the official openai client, the negotiax extension, auth, every bad
input, streaming and disconnects, a loopback load test, Ctrl-C / SIGTERM, and `negotiax evaluate` against it."""
from __future__ import annotations

import http.client
import json
import signal
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import torch

from negotiax.cli import main as cli_main
from negotiax.data import DataConfig, format_prompt, load_test_sets
from negotiax.saving import load_circuit
from serve_tiny import ServerProcess, parrot_judge, save_tiny, tiny_llama

KEY = "sk-serve-test-key-never-logged"
CAP, CONTEXT, BODY_LIMIT = 200, 256, 20_000


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory, smol_tokenizer):
    return save_tiny(tmp_path_factory.mktemp("served"), smol_tokenizer)


@pytest.fixture(scope="module")
def server(tiny_files, tmp_path_factory):
    backbone, circuit = tiny_files
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    proc = ServerProcess(backbone, circuit, log, "--api-key-env", "NEGOTIAX_SERVE_KEY", "--max-tokens-cap", str(CAP),
                         "--max-body-bytes", str(BODY_LIMIT), env={"NEGOTIAX_SERVE_KEY": KEY})
    yield proc.wait_ready()
    proc.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def post(server, path: str, body: bytes | dict, key: str | None = KEY) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    request = urllib.request.Request(server.url + path, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def health(server) -> dict:
    with urllib.request.urlopen(server.url + "/health", timeout=10) as r:
        return json.loads(r.read())


def reference_text(tiny_files, tokenizer, prompt: str, beta: dict | None, n: int) -> str:
    """Independent reference: transformers' greedy `generate` with the saved circuit (or none), one prompt."""
    backbone, circuit = tiny_files
    model = tiny_llama(tokenizer)
    model.load_state_dict(type(model).from_pretrained(backbone).state_dict())
    attachment = load_circuit(circuit, model) if beta is not None else None
    if attachment is not None:
        attachment.circuit.set_preference(beta)
    ids = torch.tensor([tokenizer(format_prompt(tokenizer, prompt), add_special_tokens=False).input_ids])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         pad_token_id=0)
    if attachment is not None:
        attachment.detach()
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_openai_client_chat_with_a_preference(server, client, tiny_files, smol_tokenizer):
    models = [m.id for m in client.models.list().data]
    assert models == ["negotiax", "negotiax:base"]
    prompt, beta = "What is 2+2?", {"harmless": 2.0, "honest": -1.5}
    reply = client.chat.completions.create(
        model="negotiax", messages=[{"role": "user", "content": prompt}], max_tokens=10, temperature=0,
        extra_body={"negotiax": {"preference": beta, "mute": ["helpful"]}})
    expected = reference_text(tiny_files, smol_tokenizer, prompt, {**beta, "helpful": float("-inf")}, 10)
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 10
    nx = reply.model_extra["negotiax"]
    assert nx["preference"] == beta and nx["mute"] == ["helpful"]
    assert nx["alpha"]["helpful"] == 0.0 and abs(sum(nx["alpha"].values()) - 1) < 1e-4
    base = client.chat.completions.create(model="negotiax:base", messages=[{"role": "user", "content": prompt}],
                                          max_tokens=10, temperature=0)
    assert base.choices[0].message.content == reference_text(tiny_files, smol_tokenizer, prompt, None, 10)
    assert base.model_extra["negotiax"]["alpha"] is None


def test_streaming_equals_non_streaming(client):
    kwargs = dict(model="negotiax", messages=[{"role": "user", "content": "Name three colours"}], max_tokens=12,
                  temperature=0, extra_body={"negotiax": {"preference": {"honest": 1.0}}})
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 12 and chunks[-1].choices == []
    final = [c for c in chunks if c.model_extra.get("negotiax")]
    assert len(final) == 1 and final[0].model_extra["negotiax"]["alpha"] == whole.model_extra["negotiax"]["alpha"]
    stream = client.completions.create(model="negotiax", prompt="Once upon a time", max_tokens=6, temperature=0,
                                       stream=True)
    plain = client.completions.create(model="negotiax", prompt="Once upon a time", max_tokens=6, temperature=0)
    assert "".join(c.choices[0].text for c in stream) == plain.choices[0].text


def test_stop_string_cuts_the_answer(client):
    kwargs = dict(model="negotiax", prompt="Once upon a time", max_tokens=12, temperature=0)
    full = client.completions.create(**kwargs).choices[0].text
    stop = full[len(full) // 2:len(full) // 2 + 3]
    cut = client.completions.create(stop=[stop], **kwargs).choices[0]
    assert cut.text == full[:full.index(stop)] and cut.finish_reason == "stop"


def test_api_key_required_and_never_logged(server):
    body = {"model": "negotiax", "prompt": "hi", "max_tokens": 2}
    for key in (None, "sk-wrong"):
        status, err = post(server, "/v1/completions", body, key=key)
        assert status == 401 and err["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="sk-wrong", max_retries=0).models.list()
    assert post(server, "/v1/completions", body)[0] == 200
    log = server.log_path.read_text()
    assert KEY not in log and "sk-wrong" not in log and "401" in log  # the access log has the status only


@pytest.mark.parametrize("body, status, param", [
    (b'{"model": "negotiax", "prompt": ', 400, "body"),
    (b'["not", "an", "object"]', 400, "body"),
    ({"model": "negotiax", "prompt": "hi", "negotiax": {"preference": {"kindness": 1.0}}}, 400,
     "negotiax.preference.kindness"),
    ({"model": "negotiax", "prompt": "hi", "negotiax": {"mute": ["kindness"]}}, 400, "negotiax.mute"),
    (b'{"model": "negotiax", "prompt": "hi", "negotiax": {"preference": {"harmless": Infinity}}}', 400,
     "negotiax.preference.harmless"),
    (b'{"model": "negotiax", "prompt": "hi", "negotiax": {"preference": {"honest": NaN}}}', 400,
     "negotiax.preference.honest"),
    ({"model": "negotiax", "prompt": "hi", "negotiax": {"weights": {}}}, 400, "negotiax.weights"),
    ({"model": "negotiax", "prompt": "hi", "max_tokens": CAP + 1}, 400, "max_tokens"),
    ({"model": "negotiax", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": CAP + 1}, 400,
     "max_completion_tokens"),
    ({"model": "negotiax", "prompt": "word " * (CONTEXT + 10)}, 400, "prompt"),
    ({"model": "negotiax", "messages": [{"role": "user", "content": "word " * (CONTEXT + 10)}]}, 400, "messages"),
    ({"model": "negotiax", "prompt": "hi", "max_tokens": CAP}, 200, None),  # fits: 200 + a few prompt tokens
    ({"model": "negotiax", "prompt": "word " * 100, "max_tokens": CAP}, 400, "max_tokens"),  # over the context
    ({"model": "negotiax", "prompt": "x " * BODY_LIMIT}, 400, "body"),
    ({"model": "negotiax", "prompt": "hi", "n": 2}, 400, "n"),
    ({"model": "negotiax", "prompt": "hi", "temperature": -1}, 400, "temperature"),
    ({"prompt": "hi"}, 400, "model"),
    ({"model": "gpt-4", "prompt": "hi"}, 404, "model"),
    ({"model": "negotiax:base", "prompt": "hi", "negotiax": {"preference": {"harmless": 1.0}}}, 400, "negotiax"),
])
def test_bad_input_gets_an_openai_error_naming_the_field(server, body, status, param):
    path = "/v1/chat/completions" if isinstance(body, dict) and "messages" in body else "/v1/completions"
    got, reply = post(server, path, body)
    assert got == status, reply
    if status != 200:
        assert reply["error"]["param"] == param and reply["error"]["message"]
    assert health(server)["status"] == "ok"  # nothing crashes the server


def test_disconnect_mid_stream_frees_the_slot(server):
    before = health(server)["cancelled"]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    body = json.dumps({"model": "negotiax", "prompt": "Once", "max_tokens": CAP, "temperature": 0, "stream": True})
    conn.request("POST", "/v1/completions", body, {"Authorization": f"Bearer {KEY}"})
    response = conn.getresponse()
    assert response.status == 200 and response.read(6) == b"data: "
    conn.sock.close()  # the client goes away after its first chunk
    conn.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and health(server)["cancelled"] == before:
        time.sleep(0.05)
    state = health(server)
    assert state["cancelled"] == before + 1 and state["active"] == 0


def test_load_32_concurrent_requests_equal_each_alone(server, client):
    prefs = [{}, {"harmless": 2.0}, {"helpful": -3.0, "honest": 1.0}, {"honest": 4.0}]

    def request(i: int):
        extra = {"negotiax": {"preference": prefs[i % 4], "mute": ["harmless"] if i % 5 == 0 else []}}
        model = "negotiax:base" if i % 7 == 3 else "negotiax"
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"Question {i}: tell me about the number {i * 7}."}],
            max_tokens=8 + i % 9, temperature=0, extra_body={} if model.endswith(":base") else extra)
        return reply.choices[0].message.content, reply.usage.completion_tokens

    batches = health(server)["batches"]
    start = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        together = list(pool.map(request, range(32)))  # any exception fails the test: 0 errors allowed
    elapsed = time.perf_counter() - start
    used = health(server)["batches"] - batches
    alone = [request(i) for i in range(32)]
    assert together == alone
    assert used < 32  # requests were decoded together
    tokens = sum(n for _, n in together)
    print(f"\nload: 32 concurrent requests in {elapsed:.2f} s over {used} batches, {tokens} tokens, "
          f"{tokens / elapsed:.0f} tokens/s")


def test_evaluate_with_a_served_judge(tmp_path, smol_tokenizer, monkeypatch):
    judge = parrot_judge(tmp_path / "judge", smol_tokenizer)  # answers "(a)" to anything
    proc = ServerProcess(judge, None, tmp_path / "judge.log", "--model-name", "parrot").wait_ready()
    try:
        helpful = dict(load_test_sets(DataConfig(test_limit=3)))["helpful"]
        rows = [{"id": ex.id, "objective": "helpful", "prompt": ex.prompt, "output": f"answer {i}",
                 "n_new_tokens": 2} for i, ex in enumerate(helpful)]
        gen = tmp_path / "gen.jsonl"
        gen.write_text("".join(json.dumps(r) + "\n" for r in rows))
        args = json.dumps({"base_url": proc.url + "/v1", "model": "parrot", "max_retries": 0})
        rc = cli_main(["evaluate", "--generations", str(gen), "--out", str(tmp_path / "out"), "--no-model",
                       "--objectives", "helpful", "data.test_limit=3", "eval.judges={pairwise: openai-pairwise}",
                       f"eval.judge_args={{openai-pairwise: {args}}}", f"eval.cache_path={tmp_path / 'c.sqlite'}",
                       "eval.metrics=[wr]", "eval.n_boot=20"])
    finally:
        proc.stop()
    assert rc == 0
    wr = json.loads((tmp_path / "out" / "results.json").read_text())["metrics"]["WR"]
    # "(a)" in both orders: one win and one loss per item, so every item scores 0.5.
    assert wr["n"] == 3 and wr["missing"] == 0 and wr["value"] == pytest.approx(50.0)


@pytest.mark.parametrize("grace", [30, 0.05])  # 0.05 s: cut before the 200 tokens are out (at 0.5 s they sometimes all were)
def test_sigterm_finishes_or_cancels_running_requests_and_exits_cleanly(tiny_files, tmp_path, grace):
    backbone, circuit = tiny_files
    proc = ServerProcess(backbone, circuit, tmp_path / "s.log", "--graceful-shutdown-s", str(grace)).wait_ready()
    chunks, errors = [], []

    def stream():
        c = openai.OpenAI(base_url=proc.url + "/v1", api_key="none", max_retries=0)
        try:
            # greedy: sampled at the default temperature 1, the tiny model's answer now and then ended at a drawn
            # end-of-sequence token ("stop"), which the finished-answer check below cannot tell from a cut
            for chunk in c.completions.create(model="negotiax", prompt="Once", max_tokens=CAP, stream=True,
                                             temperature=0):
                chunks.append(chunk)
        except openai.APIError as err:  # the server's error event: the answer was cut at shutdown
            errors.append(err)

    thread = threading.Thread(target=stream)
    thread.start()
    deadline = time.monotonic() + 60
    while not chunks and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert chunks, f"no streamed chunk before SIGTERM (client errors: {errors})"
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(60) == 0
    thread.join(10)
    assert not thread.is_alive()
    log = (tmp_path / "s.log").read_text()
    assert "Traceback" not in log and "stopped:" in log
    if grace == 30:  # time enough: the running answer is finished
        assert not errors and chunks[-1].choices[0].finish_reason == "length"
    else:  # cut at the end of the grace period, with an error event the client sees
        assert len(errors) == 1 and "shutting down" in str(errors[0])
