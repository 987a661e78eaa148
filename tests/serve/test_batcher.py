"""Continuous batching: per-stream exactness in a busy batch, eviction, cancellation, faults."""

import time

import pytest
from serve_helpers import make_engine

from vist2.engine import GenerationConfig
from vist2.serve.batcher import Batcher, Job, QueueFullError

K, BETA = 8, 4


@pytest.fixture(scope="module")
def engine():
    return make_engine()


PROMPT = "It is a truth universally acknowledged, that a single man in possession of a good fortune"
PROMPTS = [PROMPT, "Short one.", PROMPT[:40] + " and some more words", PROMPT * 2, "Hello there"]


def job(engine, prompt: str, events: list, **config) -> Job:
    config = GenerationConfig(**{"stop_on_eos": False, **config})
    segments, pages, n_tokens = engine.prompt_segments(prompt, config)
    return Job(segments, pages, n_tokens, config, events.append)


def admit(batcher: Batcher, j: Job) -> None:
    batcher.submit(j)
    batcher._admit_waiting()


def done(events: list) -> tuple:
    assert events[-1][0] == "done", events[-1]
    return events[-1]


def test_streams_joining_a_busy_batch_give_the_tokens_they_give_alone(engine):
    """The exactness contract per stream: staggered joins, mixed policies and lengths, so rows
    reach their chunk boundaries at different steps and the batch cache is merged, evicted and
    compacted under them."""
    settings = [("global", 37), ("global", 21), ("none", 30), ("global", 50), ("prompt", 19)]
    batcher = Batcher(engine, max_batch=3)
    events = [[] for _ in PROMPTS]
    jobs = [
        job(engine, p, ev, policy=pol, max_new_tokens=n)
        for p, ev, (pol, n) in zip(PROMPTS, events, settings, strict=True)
    ]
    admit(batcher, jobs[0])
    for _ in range(5):
        batcher.step()
    admit(batcher, jobs[1])  # joins mid-chunk of row 0
    for _ in range(3):
        batcher.step()
    for j in jobs[2:]:  # two wait for a free row (max_batch=3)
        batcher.submit(j)
    batcher.run_until_idle()
    assert batcher.stats.compactions > 0
    for prompt, ev, j in zip(PROMPTS, events, jobs, strict=True):
        alone = engine.generate(prompt, j.config)
        _, finish, usage, tokens = done(ev)
        assert tokens == alone.token_ids
        assert "".join(e[1] for e in ev if e[0] == "text") == alone.text
        assert finish == "length"
        assert usage["pages"] == alone.stats.pages
        assert usage["peak_cache_entries"] == alone.stats.peak_cache_entries


@pytest.mark.parametrize("prefill_slots", [16384, 150])  # one prefill of all; groups of ~2
def test_jobs_admitted_together_are_prefilled_together_and_stay_exact(engine, prefill_slots):
    batcher = Batcher(engine, max_batch=8, prefill_slots=prefill_slots)
    events = [[] for _ in PROMPTS]
    jobs = [
        job(engine, p, ev, max_new_tokens=2 * K + 3) for p, ev in zip(PROMPTS, events, strict=True)
    ]
    for j in jobs:
        batcher.submit(j)
    batcher._admit_waiting()
    assert batcher.kv.rows == len(PROMPTS)
    batcher.run_until_idle()
    for prompt, ev, j in zip(PROMPTS, events, jobs, strict=True):
        alone = engine.generate(prompt, j.config)
        assert done(ev)[3] == alone.token_ids
        assert done(ev)[2]["peak_cache_entries"] == alone.stats.peak_cache_entries


def test_compaction_frees_the_evicted_columns(engine):
    batcher = Batcher(engine, max_batch=4)
    events = [[] for _ in range(4)]
    for i, ev in enumerate(events):
        admit(batcher, job(engine, PROMPTS[i], ev, policy="global", max_new_tokens=20 * K))
        for _ in range(3):  # staggered: rows evict at different steps
            batcher.step()
    for _ in range(6 * K):
        batcher.step()
        live = batcher.kv.live()
        width = int(live.max())
        # never more dead columns than the compaction threshold (plus one step's page columns)
        assert batcher.kv.width - width < max(batcher.kv.min_dead, width // 4) + BETA + 1
    assert batcher.stats.compactions > 0


def test_a_cancelled_stream_leaves_the_batch_at_the_next_step(engine):
    batcher = Batcher(engine, max_batch=4)
    events_a, events_b = [], []
    a = job(engine, PROMPT, events_a, max_new_tokens=50)
    admit(batcher, a)
    admit(batcher, job(engine, "Hello", events_b, max_new_tokens=50))
    batcher.step()
    assert batcher.kv.rows == 2
    a.cancel()
    batcher._drop_finished()
    assert batcher.kv.rows == 1 and batcher.stats.requests_cancelled == 1
    batcher.run_until_idle()
    assert done(events_b)[1] == "length"
    assert not any(e[0] == "done" for e in events_a)


def test_an_exception_in_one_request_fails_that_request_only(engine, monkeypatch):
    encode = engine.encode_texts

    def faulty(texts):
        if any("BOOM" in t for t in texts):
            raise RuntimeError("injected fault")
        return encode(texts)

    monkeypatch.setattr(engine, "encode_texts", faulty)
    batcher = Batcher(engine, max_batch=4)
    good, bad = [], []
    batcher.submit(job(engine, PROMPT, good, max_new_tokens=2 * K + 1))
    batcher.submit(job(engine, "BOOM " * 30, bad, max_new_tokens=2 * K + 1))
    batcher.run_until_idle()
    assert bad == [("error", "prefill failed: injected fault")]
    monkeypatch.setattr(engine, "encode_texts", encode)
    alone = engine.generate(PROMPT, max_new_tokens=2 * K + 1, stop_on_eos=False)
    assert done(good)[3] == alone.token_ids
    assert batcher.stats.requests_failed == 1


def test_sampling_is_per_request_and_seeded_like_the_engine(engine):
    batcher = Batcher(engine, max_batch=4)
    seeded, other = [], []
    cfg = dict(temperature=0.9, top_p=0.8, seed=7, max_new_tokens=2 * K + 3)
    batcher.submit(job(engine, PROMPT, seeded, **cfg))
    batcher.submit(job(engine, "Hello", other, temperature=1.5, max_new_tokens=K))
    batcher.run_until_idle()
    alone = engine.generate(PROMPT, stop_on_eos=False, **cfg)
    assert done(seeded)[3] == alone.token_ids


def test_stop_strings_cut_the_text_like_the_engine(engine):
    prompt = "Hello there"
    full = engine.generate(prompt, max_new_tokens=30, stop_on_eos=False)
    stop = full.text[5:9]
    assert len(stop) == 4, "the random model should write a dozen characters"
    events = []
    batcher = Batcher(engine)
    batcher.submit(job(engine, prompt, events, max_new_tokens=30, stop_strings=(stop,)))
    batcher.run_until_idle()
    alone = engine.generate(prompt, max_new_tokens=30, stop_on_eos=False, stop_strings=(stop,))
    assert alone.finish_reason == "stop"
    assert done(events)[1] == "stop"
    assert "".join(e[1] for e in events if e[0] == "text") == alone.text


def test_a_full_queue_refuses_a_job(engine):
    batcher = Batcher(engine, max_batch=1, max_queue=1)
    batcher.submit(job(engine, "Hello", [], max_new_tokens=1))
    with pytest.raises(QueueFullError):
        batcher.submit(job(engine, "Hello", [], max_new_tokens=1))
    assert batcher.queue_length == 1


def test_the_worker_thread_serves_jobs_and_stops(engine):
    batcher = Batcher(engine)
    events = []
    batcher.start()
    try:
        batcher.submit(job(engine, PROMPT, events, max_new_tokens=K + 2))
        for _ in range(400):
            if events and events[-1][0] == "done":
                break
            time.sleep(0.01)
    finally:
        batcher.stop(timeout=10)
    assert (
        done(events)[3]
        == engine.generate(PROMPT, max_new_tokens=K + 2, stop_on_eos=False).token_ids
    )
