"""The exactness contract (DESIGN.md) and the generation features, on tiny random models."""

import warnings

import pytest
import torch
from conftest import windowed_config
from transformers import GenerationConfig as HFGenerationConfig

from vist2.chunker import Chunk, decode_pieces
from vist2.engine import Engine, GenerationConfig
from vist2.errors import ConfigError, Vist2Error
from vist2.layout import ChunkSegment, TextSegment, build_layout, collate_layouts
from vist2.model import VIST2Model
from vist2.render import pages_to_tensor

K, BETA = 8, 4
PROMPT = "It is a truth universally acknowledged, that a single man in possession of a good fortune"


@pytest.fixture
def engine(tiny_model, tiny_tokenizer):
    return Engine(tiny_model, tiny_tokenizer)


def reference_logits(
    engine: Engine, prompt: str, tokens: list[int], config: GenerationConfig, compress_output: bool
):
    """One forward of the training layout over prompt + generated tokens (rule-2 mask): the logits
    at the slots that predict each generated token, (T, V)."""
    segments, page_texts, _ = engine.prompt_segments(prompt, config)
    groups = [tokens[i : i + K] for i in range(0, len(tokens), K)] if compress_output else [tokens]
    for group in groups[:-1]:
        segments.append(ChunkSegment(tuple(group), train=True))
    segments.append(TextSegment(tuple(groups[-1]), train=True))
    if compress_output:
        page_texts += decode_pieces(engine.tokenizer, groups)[:-1]
    layout = build_layout(segments, BETA)
    batch = collate_layouts([layout])
    pages = pages_to_tensor(engine.renderer.render_batch(page_texts)) if page_texts else None
    out = engine.model(
        input_ids=batch["input_ids"],
        visual_mask=batch["visual_mask"],
        pages=pages,
        position_ids=batch["position_ids"],
        attention_mask=batch["attention_mask"],
    )
    slots = (batch["labels"][0] != -100).nonzero()[:, 0]
    assert batch["labels"][0, slots].tolist() == tokens  # the slots predict exactly these tokens
    return out.logits[0, slots].float()


@pytest.mark.parametrize("chat", [False, True])
@pytest.mark.parametrize("cache", ["static", "dynamic"])
def test_global_generation_matches_one_forward_of_the_training_layout(engine, chat, cache):
    config = GenerationConfig(
        policy="global", max_new_tokens=3 * K + 5, stop_on_eos=False, chat=chat, cache=cache
    )
    result = engine.generate(PROMPT, config, return_logits=True)
    assert len(result.token_ids) == 3 * K + 5
    assert result.stats.pages >= 3 + 1  # prompt pages + three output pages
    expected = reference_logits(engine, PROMPT, result.token_ids, config, compress_output=True)
    torch.testing.assert_close(result.logits, expected, atol=1e-4, rtol=1e-4)


def test_a_windowed_encoder_keeps_the_exactness_contract(tiny_tokenizer):
    torch.manual_seed(0)
    engine = Engine(VIST2Model(windowed_config()).eval(), tiny_tokenizer)
    config = GenerationConfig(policy="global", max_new_tokens=2 * K + 3, stop_on_eos=False)
    result = engine.generate(PROMPT, config, return_logits=True)
    expected = reference_logits(engine, PROMPT, result.token_ids, config, compress_output=True)
    torch.testing.assert_close(result.logits, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("policy", ["prompt", "none"])
def test_baseline_policies_match_one_forward(engine, policy):
    config = GenerationConfig(policy=policy, max_new_tokens=2 * K + 3, stop_on_eos=False)
    result = engine.generate(PROMPT, config, return_logits=True)
    expected = reference_logits(engine, PROMPT, result.token_ids, config, compress_output=False)
    torch.testing.assert_close(result.logits, expected, atol=1e-4, rtol=1e-4)


def test_none_greedy_equals_hugging_face_generate(engine, tiny_tokenizer):
    result = engine.generate(PROMPT, policy="none", max_new_tokens=40, stop_on_eos=False)
    ids = torch.tensor([tiny_tokenizer(PROMPT, add_special_tokens=False)["input_ids"]])
    hf = engine.model.language_model.generate(
        ids,
        generation_config=HFGenerationConfig(
            max_new_tokens=40, do_sample=False, eos_token_id=None, pad_token_id=0
        ),
    )
    assert result.token_ids == hf[0, ids.shape[1] :].tolist()


@pytest.mark.parametrize("policy", ["global", "prompt", "none"])
def test_a_batch_gives_the_same_tokens_as_each_prompt_alone(engine, policy):
    prompts = [PROMPT, "Short one.", PROMPT[:40] + " and some more words to vary the length of it"]
    config = GenerationConfig(policy=policy, max_new_tokens=2 * K + 3, stop_on_eos=False)
    together = engine.generate(prompts, config, return_logits=True)
    for prompt, res in zip(prompts, together, strict=True):
        alone = engine.generate(prompt, config, return_logits=True)
        assert res.token_ids == alone.token_ids
        torch.testing.assert_close(res.logits, alone.logits, atol=1e-4, rtol=1e-4)


def test_prompt_equals_global_until_the_first_output_chunk_is_compressed(engine):
    kw = dict(max_new_tokens=2 * K, stop_on_eos=False)
    glob = engine.generate(PROMPT, policy="global", return_logits=True, **kw)
    prompt = engine.generate(PROMPT, policy="prompt", return_logits=True, **kw)
    assert glob.token_ids[:K] == prompt.token_ids[:K]
    torch.testing.assert_close(glob.logits[:K], prompt.logits[:K])
    # from token K on, global reads chunk 1 through its page: the logits must differ
    assert not torch.allclose(glob.logits[K:], prompt.logits[K:])


def test_global_cache_stays_bounded(engine):
    n = 20 * K
    glob = engine.generate(PROMPT, policy="global", max_new_tokens=n, stop_on_eos=False)
    none = engine.generate(PROMPT, policy="none", max_new_tokens=n, stop_on_eos=False)
    segments, _, _ = engine.prompt_segments(PROMPT, GenerationConfig())
    persistent_prompt = len(build_layout(segments, BETA))
    persistent = persistent_prompt + (n // K) * BETA  # prompt + output pages
    assert glob.stats.peak_cache_entries <= persistent + K + BETA
    assert none.stats.peak_cache_entries == none.stats.prompt_tokens + n - 1
    # r = 2 here: output costs β/K = 1/2 of the text, plus the prompt and one open chunk
    assert glob.stats.peak_cache_bytes < 0.6 * none.stats.peak_cache_bytes
    per_entry = glob.stats.peak_cache_bytes / glob.stats.peak_cache_entries
    assert per_entry == none.stats.peak_cache_bytes / none.stats.peak_cache_entries


def test_sampling_is_seeded_and_respects_top_k(engine):
    kw = dict(
        policy="global",
        max_new_tokens=12,
        temperature=0.8,
        top_p=0.9,
        top_k=5,
        seed=3,
        stop_on_eos=False,
    )
    a = engine.generate(PROMPT, return_logits=True, **kw)
    b = engine.generate(PROMPT, **kw)
    assert a.token_ids == b.token_ids
    for logits, token in zip(a.logits, a.token_ids, strict=True):
        assert token in logits.topk(5).indices.tolist()


def test_streaming_hands_out_the_same_text(engine):
    pieces = list(engine.stream(PROMPT, max_new_tokens=2 * K, stop_on_eos=False))
    result = engine.generate(PROMPT, max_new_tokens=2 * K, stop_on_eos=False)
    assert len(pieces) > 1 and "".join(pieces) == result.text


def test_stop_strings_and_eos(engine, tiny_tokenizer):
    free = engine.generate(PROMPT, max_new_tokens=30, stop_on_eos=False)
    stop = free.text[5:8]
    cut = engine.generate(PROMPT, max_new_tokens=30, stop_on_eos=False, stop_strings=(stop,))
    assert cut.finish_reason == "stop" and cut.text == free.text[: free.text.find(stop)]
    eos = free.token_ids[3]
    engine.stop_ids = {eos}
    ended = engine.generate(PROMPT, max_new_tokens=30)
    assert ended.finish_reason == "eos" and ended.token_ids[-1] == eos


def test_stats_are_filled(engine):
    res = engine.generate(PROMPT, policy="global", max_new_tokens=2 * K + 1, stop_on_eos=False)
    s = res.stats
    assert s.generated_tokens == 2 * K + 1 and s.pages == s.visual_tokens // BETA
    assert s.prompt_tokens > 0 and s.ttft_s > 0 and s.decode_tokens_per_s > 0
    assert s.render_s > 0 and s.vision_s > 0 and s.llm_s > 0


def test_bad_requests_are_clear_errors(engine):
    with pytest.raises(Vist2Error, match="empty"):
        engine.generate("   ")
    with pytest.raises(ConfigError, match="policy"):
        engine.generate(PROMPT, policy="partial")
    with pytest.raises(ConfigError, match="stop_strings"):
        engine.generate(PROMPT, stop_strings=("",))
    with pytest.raises(Vist2Error, match="max_position_embeddings"):
        engine.generate(PROMPT, policy="none", max_new_tokens=10_000)


def test_eager_attention_generates_what_sdpa_generates(engine):
    kw = dict(policy="global", max_new_tokens=2 * K + 1, stop_on_eos=False)
    sdpa = engine.generate([PROMPT, "Short one."], return_logits=True, **kw)
    engine.model.set_attn_implementation("eager")
    eager = engine.generate([PROMPT, "Short one."], return_logits=True, **kw)
    for a, b in zip(sdpa, eager, strict=True):
        assert a.token_ids == b.token_ids
        torch.testing.assert_close(a.logits, b.logits, atol=1e-4, rtol=1e-4)


def test_a_page_that_overflows_while_writing_stops_and_keeps_the_text(engine, monkeypatch):
    from vist2.render import PageOverflowError

    def overflow(texts):
        raise PageOverflowError("chunk 0 does not fit", index=0)

    monkeypatch.setattr(engine.renderer, "render_batch", overflow)
    result = engine.generate("Hi", policy="global", max_new_tokens=3 * K, stop_on_eos=False)
    assert result.finish_reason == "overflow"
    assert len(result.token_ids) == K  # the first chunk was written, its page could not be made


@pytest.mark.parametrize("policy", ["global", "none"])
def test_position_budget_counts_the_furthest_position(policy):
    from vist2.engine import last_position_offset
    from vist2.layout import response_segments

    for n in range(1, 5 * K + 2):
        ids = list(range(n))
        if policy == "global":
            chunks = [Chunk(tuple(ids[i : i + K]), "", True) for i in range(0, n, K)]
            layout = build_layout(response_segments(chunks), BETA)
        else:
            layout = build_layout([TextSegment(tuple(ids))], BETA)
        assert last_position_offset(n, policy, K, BETA) == int(layout.position_ids.max()), n


# -- the step iterator and compiled decode --------------------------------------------------------


def test_steps_yield_one_event_per_token_then_the_results(engine):
    from vist2.engine import TokenEvent

    generation = engine.steps([PROMPT, "Short one."], max_new_tokens=K + 2, stop_on_eos=False)
    events = list(generation)
    assert all(type(e) is TokenEvent for e in events)
    for row, result in enumerate(generation.results):
        mine = [e for e in events if e.row == row]
        assert [e.token for e in mine] == result.token_ids
        assert "".join(e.text for e in mine) == result.text


def fixed_shape_engine(engine: Engine) -> Engine:
    """The compiled path's fixed-shape step, run eagerly (no compile time): the same code
    `torch.compile` captures."""
    from vist2.engine import _fixed_step

    engine._compiled = _fixed_step
    return engine


@pytest.mark.parametrize("policy", ["global", "prompt", "none"])
def test_fixed_shape_decode_matches_one_forward_and_eager(engine, policy, monkeypatch):
    monkeypatch.setattr("vist2.engine._MIN_WINDOW", 8)  # the attention window grows: 8, 16, ...
    prompts = [PROMPT, "Short one."]  # left padding: the mask hides it in every window
    config = GenerationConfig(policy=policy, max_new_tokens=3 * K + 2, stop_on_eos=False)
    eager = engine.generate(prompts, config, return_logits=True)
    fixed = fixed_shape_engine(engine).generate(prompts, config, return_logits=True, compile=True)
    for prompt, a, b in zip(prompts, eager, fixed, strict=True):
        assert a.token_ids == b.token_ids
        torch.testing.assert_close(b.logits, a.logits, atol=1e-4, rtol=1e-4)
        assert a.stats.peak_cache_entries == b.stats.peak_cache_entries
        assert a.cache_entries == b.cache_entries
        expected = reference_logits(engine, prompt, b.token_ids, config, policy == "global")
        torch.testing.assert_close(b.logits, expected, atol=1e-4, rtol=1e-4)


def test_compile_needs_the_static_cache():
    with pytest.raises(ConfigError, match="compile"):
        GenerationConfig(compile=True, cache="dynamic")


@pytest.mark.slow
def test_compiled_global_decode_keeps_the_exactness_contract(engine):
    """torch.compile (inductor on CPU; CUDA graphs on GPU) of the decode and chunk-boundary steps:
    same tokens and logits as eager and as one forward of the training layout (~30 s compile)."""
    from torch._dynamo.utils import counters

    prompts = [PROMPT, "Short one."]
    config = GenerationConfig(policy="global", max_new_tokens=2 * K + 3, stop_on_eos=False)
    eager = engine.generate(prompts, config, return_logits=True)
    engine.steps(prompts, config, compile=True).precompile()  # every graph, before the run
    graphs = counters["stats"]["unique_graphs"]
    compiled = engine.generate(prompts, config, return_logits=True, compile=True)
    assert counters["stats"]["unique_graphs"] == graphs  # nothing left to compile
    for prompt, a, b in zip(prompts, eager, compiled, strict=True):
        assert a.token_ids == b.token_ids
        torch.testing.assert_close(b.logits, a.logits, atol=1e-4, rtol=1e-4)
        expected = reference_logits(engine, prompt, b.token_ids, config, compress_output=True)
        torch.testing.assert_close(b.logits, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cache", ["static", "dynamic"])
def test_the_kv_cache_goes_by_the_name_this_transformers_takes(engine, cache):
    """transformers 5.25 renamed the decoder's `past_key_values` argument `cache` and warns on
    the old name; generating (prefill, decode, compression) passes whichever it takes, silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        result = engine.generate(
            PROMPT, policy="global", max_new_tokens=2 * K + 1, stop_on_eos=False, cache=cache
        )
    assert result.stats.pages >= 2
