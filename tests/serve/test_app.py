"""The HTTP server driven by the official `openai` client: SSE format, errors, batch vs alone."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from serve_helpers import MODEL, make_engine, serve

from vist2.engine import GenerationConfig


@pytest.fixture(scope="module")
def engine():
    return make_engine()


@pytest.fixture(scope="module")
def server(engine):
    with serve(engine) as live:
        yield live


PROMPT = "It is a truth universally acknowledged, that a single man in possession of a good fortune"


def client(live) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key="none", max_retries=0, timeout=60)


def sse_events(live, path: str, body: dict) -> list:
    """The `data:` payloads of a streamed response, parsed (the final "[DONE]" kept as is)."""
    with httpx.stream("POST", live.url + path, json=body, timeout=60) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    payloads = [line.removeprefix("data: ") for line in lines]
    return [p if p == "[DONE]" else json.loads(p) for p in payloads]


def test_models_health_and_metrics(server):
    models = client(server).models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    text = httpx.get(server.url + "/metrics").text
    for name in (
        "vist2_generated_tokens_total",
        "vist2_queue_length",
        "vist2_cache_live_entries",
        "vist2_pages_rendered_total",
        "vist2_http_responses_total",
    ):
        assert name in text


def test_chat_stream_follows_the_openai_conventions(server):
    events = sse_events(
        server,
        "/v1/chat/completions",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": 12,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": True,
        },
    )
    assert events[-1] == "[DONE]"
    chunks, usage = events[:-2], events[-2]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in events[:-1]}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    finishes = [c["choices"][0]["finish_reason"] for c in chunks]
    assert finishes[-1] == "length" and all(f is None for f in finishes[:-1])
    assert usage["choices"] == []
    u = usage["usage"]
    assert u["completion_tokens"] == 12
    assert u["total_tokens"] == u["prompt_tokens"] + 12
    assert u["pages"] >= 1 and u["visual_tokens"] == 4 * u["pages"]
    assert u["peak_cache_entries"] > 0


def test_openai_client_streaming_and_not_agree_with_the_engine(server, engine):
    c = client(server)
    kw = dict(model=MODEL, max_tokens=20, temperature=0, extra_body={"ignore_eos": True})
    messages = [{"role": "user", "content": PROMPT}]
    whole = c.chat.completions.create(messages=messages, **kw)
    parts = c.chat.completions.create(messages=messages, stream=True, **kw)
    streamed = "".join(ch.choices[0].delta.content or "" for ch in parts if ch.choices)
    alone = engine.generate(PROMPT, chat=True, max_new_tokens=20, stop_on_eos=False)
    assert whole.choices[0].message.content == streamed == alone.text
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 20

    text = c.completions.create(prompt=PROMPT, **kw)
    assert (
        text.choices[0].text == engine.generate(PROMPT, max_new_tokens=20, stop_on_eos=False).text
    )


def test_concurrent_streams_give_the_tokens_they_give_alone(server, engine):
    prompts = [PROMPT, "Short one.", PROMPT[:50] + " and more", PROMPT * 2, "Hello there"]
    lengths = [37, 21, 30, 45, 19]
    policies = ["global", "global", "none", "global", "prompt"]
    c = client(server)

    def run(i: int) -> str:
        time.sleep(0.05 * i)  # staggered joins
        stream = c.completions.create(
            model=MODEL,
            prompt=prompts[i],
            max_tokens=lengths[i],
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True, "policy": policies[i]},
        )
        return "".join(ch.choices[0].text for ch in stream if ch.choices)

    with ThreadPoolExecutor(len(prompts)) as pool:
        texts = list(pool.map(run, range(len(prompts))))
    for prompt, n, policy, text in zip(prompts, lengths, policies, texts, strict=True):
        config = GenerationConfig(policy=policy, max_new_tokens=n, stop_on_eos=False)
        assert text == engine.generate(prompt, config).text


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "Hi", "bogus": 1}, "bogus"),
        ({"prompt": "  "}, "prompt"),
        ({"prompt": "Hi", "temperature": -1}, "temperature"),
        ({"prompt": "Hi", "top_p": 0}, "top_p"),
        ({"prompt": "Hi", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "Hi", "n": 2}, "n"),
        ({"prompt": "Hi", "policy": "bogus"}, "policy"),
        ({"prompt": "Hi", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({}, "prompt"),
    ],
)
def test_bad_requests_get_a_400_with_an_openai_error_body(server, body, param):
    resp = httpx.post(server.url + "/v1/completions", json={"model": MODEL, **body})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["message"]


def test_malformed_json_overlong_prompt_and_unknown_model(server):
    resp = httpx.post(server.url + "/v1/chat/completions", content=b'{"model": ', timeout=10)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"
    c = client(server)
    with pytest.raises(openai.BadRequestError, match="over this server's limit"):
        c.completions.create(model=MODEL, prompt="word " * 1000, max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="last message must have role 'user'"):
        c.chat.completions.create(model=MODEL, messages=[{"role": "assistant", "content": "x"}])
    with pytest.raises(openai.NotFoundError):
        c.completions.create(model="gpt-4", prompt="Hi")


def wait_for(predicate, seconds: float = 10.0) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_client_that_disconnects_frees_its_row(server):
    batcher = server.app.state.batcher
    cancelled = batcher.stats.requests_cancelled
    stream = client(server).completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=3000, stream=True, extra_body={"ignore_eos": True}
    )
    next(iter(stream))
    assert wait_for(lambda: batcher.stats.running == 1)
    stream.close()
    assert wait_for(lambda: batcher.stats.running == 0 and batcher.kv.rows == 0)
    assert batcher.stats.requests_cancelled == cancelled + 1


def test_a_full_queue_answers_429(engine):
    with serve(engine, max_batch=1, max_queue=1) as live:
        c = client(live)
        long = dict(
            model=MODEL,
            prompt=PROMPT,
            max_tokens=3000,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        running = c.completions.create(**long)
        next(iter(running))  # admitted: the single row is taken
        waiting = c.completions.create(**long)  # waits in the queue (the response is open)
        assert wait_for(lambda: live.app.state.batcher.queue_length == 1)
        with pytest.raises(openai.RateLimitError, match="queue is full"):
            c.completions.create(model=MODEL, prompt="Hi", max_tokens=2)
        running.close()
        waiting.close()


def test_a_conversation_keeps_earlier_turns_as_template_text(server, engine):
    c = client(server)
    kw = dict(model=MODEL, max_tokens=10, temperature=0, extra_body={"ignore_eos": True})
    one = c.chat.completions.create(messages=[{"role": "user", "content": PROMPT}], **kw)
    turns = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": PROMPT},
    ]
    many = c.chat.completions.create(messages=turns, **kw)
    text = engine.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    n_whole = len(engine.tokenizer(text, add_special_tokens=False)["input_ids"])
    # the template around the query and the query are tokenized apart: the two cuts may merge
    # differently than one tokenization of the whole conversation
    assert abs(many.usage.prompt_tokens - n_whole) <= 2
    assert many.usage.prompt_tokens > one.usage.prompt_tokens
    assert many.usage.pages == one.usage.pages  # the query is paged the same way


def test_an_unexpected_error_is_a_500_with_an_openai_body_and_the_server_goes_on(
    server, monkeypatch
):
    from vist2.serve import app as app_module

    def broken(*args):
        raise RuntimeError("injected bug")

    monkeypatch.setattr(app_module, "_prepare", broken)
    resp = httpx.post(server.url + "/v1/completions", json={"model": MODEL, "prompt": "Hi"})
    assert resp.status_code == 500
    assert resp.json()["error"] == {
        "message": "internal error: injected bug",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    monkeypatch.undo()
    ok = client(server).completions.create(model=MODEL, prompt="Hi", max_tokens=3)
    assert ok.choices[0].finish_reason in ("length", "stop")


def test_a_non_streaming_client_that_gives_up_frees_its_row(server):
    batcher = server.app.state.batcher
    cancelled = batcher.stats.requests_cancelled
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 3000, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/completions", json=body, timeout=1.0)
    assert wait_for(lambda: batcher.stats.running == 0 and batcher.kv.rows == 0)
    assert batcher.stats.requests_cancelled == cancelled + 1
