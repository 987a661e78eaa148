"""VIST2Model: a forward and backward for each stage layout, save/load, assembly from parts."""

import pytest
import torch
from conftest import tiny_config, windowed_config
from transformers import AutoModelForCausalLM, SiglipVisionModel

from vist2.chunker import Chunk
from vist2.config import VIST2Config
from vist2.errors import ConfigError, Vist2Error
from vist2.layout import (
    ChunkSegment,
    TextSegment,
    build_layout,
    caption_layout,
    collate_layouts,
    ocr_layout,
    olm_layout,
    sft_layout,
)
from vist2.loading import load_model, save_model
from vist2.model import VIST2Model

K, BETA = 8, 4


def chunks(n_full, tail=0, start=10):
    out = [Chunk(tuple(range(start + i * K, start + (i + 1) * K)), "", True) for i in range(n_full)]
    if tail:
        out.append(Chunk(tuple(range(500, 500 + tail)), "", tail > BETA))
    return out


STAGES = {
    "caption": [caption_layout([5, 6, 7, 8]), caption_layout([9, 10])],
    "ocr": [ocr_layout([[1, 2, 3], [4, 5]]), ocr_layout([[6, 7, 8, 9]])],
    "olm": [olm_layout(chunks(3, tail=3)), olm_layout(chunks(2))],
    "sft": [
        sft_layout([100, 101], chunks(2, tail=2), [102, 103], chunks(2, tail=3, start=40)),
        sft_layout([100], chunks(1, tail=6), [102], chunks(0, tail=5)),
    ],
}


def run(model, segment_lists, pages=None, **kwargs):
    layouts = [build_layout(s, BETA) for s in segment_lists]
    batch = collate_layouts(layouts)
    n_pages = sum(lay.num_pages for lay in layouts)
    if pages is None:
        pages = torch.rand(n_pages, 64, 64) * 2 - 1
    pages = pages[:n_pages]
    return model(
        input_ids=batch["input_ids"],
        visual_mask=batch["visual_mask"],
        pages=pages,
        position_ids=batch["position_ids"],
        attention_mask=batch["attention_mask"],
        labels=batch["labels"],
        **kwargs,
    )


@pytest.mark.parametrize("stage", list(STAGES))
def test_forward_backward_each_stage(tiny_model, stage):
    tiny_model.train()
    out = run(tiny_model, STAGES[stage])
    assert torch.isfinite(out.loss) and out.num_labelled > 0
    out.loss.backward()
    # the loss reaches every part: LLM, aligner and vision encoder (through the pages)
    for part in (tiny_model.language_model, tiny_model.aligner, tiny_model.vision_model):
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), type(part).__name__


def test_loss_is_mean_over_labelled_slots(tiny_model):
    out = run(tiny_model, STAGES["olm"], return_logits=True)
    labels = collate_layouts([build_layout(s, BETA) for s in STAGES["olm"]])["labels"]
    assert out.num_labelled == int((labels != -100).sum())
    assert out.logits.shape == (out.num_labelled, tiny_model.config.text_config.vocab_size)


def test_save_load_round_trip(tiny_model, tiny_tokenizer, tmp_path):
    pages = torch.rand(8, 64, 64) * 2 - 1
    expected = run(tiny_model, STAGES["sft"], pages, return_logits=True)
    save_model(tiny_model, tiny_tokenizer, tmp_path)
    loaded, tokenizer = load_model(tmp_path)
    got = run(loaded, STAGES["sft"], pages, return_logits=True)
    torch.testing.assert_close(got.logits, expected.logits)
    assert loaded.config.to_dict()["render"] == tiny_model.config.render
    assert tokenizer("hello")["input_ids"] == tiny_tokenizer("hello")["input_ids"]
    lm = loaded.language_model  # tied embeddings stay tied after loading
    assert (
        lm.get_output_embeddings().weight.data_ptr() == lm.get_input_embeddings().weight.data_ptr()
    )


def test_load_reports_missing_files(tmp_path):
    with pytest.raises(Vist2Error, match="does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(Vist2Error, match="tokenizer.json"):
        load_model(tmp_path)


def test_from_parts_uses_the_pretrained_weights(tmp_path):
    cfg = tiny_config()
    torch.manual_seed(1)
    llm = AutoModelForCausalLM.from_config(cfg.text_config)
    with_head = cfg.vision_config.to_dict() | {"vision_use_head": True}  # as SigLIP ships
    vision = SiglipVisionModel(type(cfg.vision_config)(**with_head))
    llm.save_pretrained(tmp_path / "llm")
    vision.save_pretrained(tmp_path / "vision")
    model = VIST2Model.from_parts(
        tmp_path / "llm",
        tmp_path / "vision",
        chunk_tokens=K,
        visual_tokens_per_page=BETA,
        compression_ratio=2.0,
        merge_size=2,
        render=cfg.render,
    )
    torch.testing.assert_close(
        model.language_model.get_input_embeddings().weight, llm.get_input_embeddings().weight
    )
    w = dict(model.vision_model.named_parameters())
    for name, p in vision.named_parameters():
        if not name.startswith("head."):
            torch.testing.assert_close(w[name], p)
    # the pooling head is dropped: VIST2 reads patch tokens, and an unused head breaks DDP
    assert not any(name.startswith("head.") for name in w)
    assert model.config.vision_config.vision_use_head is False
    assert torch.isfinite(run(model, STAGES["caption"]).loss)
    with pytest.raises(Vist2Error, match="no config.json"):
        VIST2Model.from_parts(tmp_path / "missing", tmp_path / "vision")


# a tiny SigLIP2 (NaFlex) tower: takes any patch grid up to 16 patches
SIGLIP2_VISION = dict(
    model_type="siglip2_vision_model",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_patches=16,
    patch_size=16,
    vision_use_head=False,
)


def test_siglip2_naflex_encoder_and_mlp_aligner():
    cfg = tiny_config(vision_config=SIGLIP2_VISION, aligner="mlp")
    model = VIST2Model(cfg)
    tokens = model.encode_pages(torch.rand(3, 64, 64))
    assert tokens.shape == (3, BETA, cfg.text_config.hidden_size)
    assert torch.isfinite(run(model, STAGES["ocr"]).loss)


def test_a_windowed_encoder_reads_each_window_on_its_own():
    torch.manual_seed(0)
    model = VIST2Model(windowed_config()).eval()
    pages = torch.rand(2, 64, 64) * 2 - 1
    with torch.no_grad():
        tokens = model.encode_pages(pages)  # [2, β=4, D]
        # oracle: encode every 32 px window alone, lay its 2x2 patch features back where they sit
        # on the page's 4x4 patch grid, then the aligner (2x2 merge -> one token per window)
        grid = torch.empty(2, 4, 4, model.config.vision_config.hidden_size)
        for r in range(2):
            for c in range(2):
                window = pages[:, None, 32 * r : 32 * r + 32, 32 * c : 32 * c + 32].expand(
                    2, 3, 32, 32
                )
                feats = model.vision_model(pixel_values=window).last_hidden_state  # [2, 4, D]
                grid[:, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2] = feats.reshape(2, 2, 2, -1)
        expected = model.aligner(grid.reshape(2, 16, -1))
        torch.testing.assert_close(tokens, expected)
        # a visual token changes only when its own window does
        changed = pages.clone()
        changed[:, 32:, :32] = -changed[:, 32:, :32]  # window (1, 0) = visual token 2
        moved = (model.encode_pages(changed) - tokens).abs().amax(dim=(0, 2))
    assert moved[2] > 1e-3 and moved[[0, 1, 3]].max() == 0


def test_a_windowed_model_trains_and_round_trips(tiny_tokenizer, tmp_path):
    torch.manual_seed(0)
    model = VIST2Model(windowed_config())
    out = run(model, STAGES["ocr"])
    out.loss.backward()
    assert any(p.grad is not None for p in model.vision_model.parameters())
    model.eval()
    pages = torch.rand(8, 64, 64) * 2 - 1
    expected = run(model, STAGES["sft"], pages, return_logits=True)
    save_model(model, tiny_tokenizer, tmp_path)
    loaded, _ = load_model(tmp_path)
    assert loaded.config.vision_window == 32
    torch.testing.assert_close(
        run(loaded, STAGES["sft"], pages, return_logits=True).logits, expected.logits
    )


def strip_config(**overrides) -> VIST2Config:
    """`tiny_config` with rectangular windows: each 16 x 64 px strip (1 x 4 patches, merged 1 x 4)
    is one visual token, the page's 4 strips read top to bottom."""
    vision = tiny_config().to_dict()["vision_config"] | {"image_size": 32}  # 2² = 1 x 4 patches
    fields = {"vision_window": [16, 64], "merge_size": [1, 4], "vision_config": vision}
    return tiny_config(**(fields | overrides))


def test_rectangular_windows_make_one_token_a_strip():
    torch.manual_seed(0)
    model = VIST2Model(strip_config()).eval()
    pages = torch.rand(2, 64, 64) * 2 - 1
    with torch.no_grad():
        tokens = model.encode_pages(pages)  # [2, β=4, D]
        # oracle: each strip alone through the encoder, its 1 x 4 patches merged into one token
        strips = []
        for r in range(4):
            strip = pages[:, None, 16 * r : 16 * r + 16].expand(2, 3, 16, 64)
            feats = model.vision_model(pixel_values=strip).last_hidden_state  # [2, 4, D_vision]
            strips.append(model.aligner.proj(feats.reshape(2, 1, -1)))  # [2, 1, D_text]
        torch.testing.assert_close(tokens, torch.tanh(torch.cat(strips, 1)))
        changed = pages.clone()
        changed[:, 32:48] = -changed[:, 32:48]  # strip 2 only
        moved = (model.encode_pages(changed) - tokens).abs().amax(dim=(0, 2))
    assert moved[2] > 1e-3 and moved[[0, 1, 3]].max() == 0


def test_a_rectangular_window_model_round_trips(tiny_tokenizer, tmp_path):
    torch.manual_seed(0)
    model = VIST2Model(strip_config()).eval()
    pages = torch.rand(8, 64, 64) * 2 - 1
    expected = run(model, STAGES["sft"], pages, return_logits=True)
    save_model(model, tiny_tokenizer, tmp_path)
    loaded, _ = load_model(tmp_path)
    assert loaded.config.window_shape == (16, 64) and loaded.config.merge_shape == (1, 4)
    torch.testing.assert_close(
        run(loaded, STAGES["sft"], pages, return_logits=True).logits, expected.logits
    )


def test_siglip2_takes_rectangular_windows_as_they_are():
    model = VIST2Model(strip_config(vision_config=SIGLIP2_VISION)).eval()
    pages = torch.rand(2, 64, 64) * 2 - 1
    with torch.no_grad():
        tokens = model.encode_pages(pages)  # [2, β=4, D]
        changed = pages.clone()
        changed[:, :16] = -changed[:, :16]  # strip 0 only
        moved = (model.encode_pages(changed) - tokens).abs().amax(dim=(0, 2))
    assert tokens.shape == (2, BETA, model.config.text_config.hidden_size)
    assert moved[0] > 1e-3 and moved[1:].max() == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"vision_window": [48, 64]}, "must divide the page"),
        (
            {"vision_window": [16, 48]},
            "multiple of vision_config.patch_size x merge_size \\(16 x 64 px\\)",
        ),
        ({"vision_window": [32, 64]}, "holds 8 patches; a SigLIP encoder .* has 4 position"),
        ({"merge_size": [1, 3]}, "merge_size \\(\\[1, 3\\]\\) must divide the patch grid"),
        ({"merge_size": [1, 0]}, "merge_size must be a positive integer or \\[rows, cols\\]"),
        ({"vision_window": [16, 64, 1]}, "vision_window must be a positive integer or"),
    ],
)
def test_rectangular_window_errors_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        strip_config(**overrides)


def test_eager_attention_gets_the_same_mask_as_sdpa(tiny_model):
    pages = torch.rand(8, 64, 64) * 2 - 1
    sdpa = run(tiny_model, STAGES["olm"], pages, return_logits=True)
    tiny_model.set_attn_implementation("eager")
    eager = run(tiny_model, STAGES["olm"], pages, return_logits=True)
    torch.testing.assert_close(eager.logits, sdpa.logits, atol=1e-5, rtol=1e-4)


def test_visual_slot_count_mismatch_is_a_clear_error(tiny_model):
    batch = collate_layouts(
        [build_layout([ChunkSegment(tuple(range(K))), TextSegment((1,))], BETA)]
    )
    with pytest.raises(ValueError, match="visual slots"):
        tiny_model(
            input_ids=batch["input_ids"],
            visual_mask=batch["visual_mask"],
            pages=torch.zeros(2, 64, 64),
            position_ids=batch["position_ids"],
            attention_mask=batch["attention_mask"],
        )


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"render": {"page_width": 60, "page_height": 64}}, "render.page_width"),
        ({"visual_tokens_per_page": 8, "compression_ratio": 1.0}, "visual_tokens_per_page"),
        ({"compression_ratio": 3.0}, "compression_ratio"),
        ({"aligner": "conv"}, "aligner"),
        ({"merge_size": 3}, "merge_size"),
        ({"chunk_tokens": 0}, "chunk_tokens"),
    ],
)
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=f"VIST2Config.{field}"):
        tiny_config(**overrides)


@pytest.mark.parametrize(
    ("window", "image_size", "message"),
    [
        (16, 16, "multiple of vision_config.patch_size x merge_size"),
        (-32, 32, "0 \\(whole page\\) or a positive integer"),
        (32, 64, "vision_window \\(32\\) must equal vision_config.image_size"),
        (0, 32, "render page \\(64 x 64\\) must equal vision_config.image_size"),
    ],
)
def test_vision_window_errors_name_the_field(window, image_size, message):
    vision = tiny_config().to_dict()["vision_config"] | {"image_size": image_size}
    with pytest.raises(ConfigError, match=message):
        tiny_config(vision_window=window, vision_config=vision)


def test_config_round_trip(tmp_path):
    cfg = tiny_config()
    cfg.save_pretrained(tmp_path)
    again = VIST2Config.from_pretrained(tmp_path)
    assert again.to_dict() == cfg.to_dict()


def test_config_replaced_merges_nested_fields_and_checks():
    cfg = tiny_config()
    beta = cfg.visual_tokens_per_page
    denser = cfg.replaced(chunk_tokens=8 * beta, compression_ratio=8.0)
    assert (denser.chunk_tokens, denser.compression_ratio) == (8 * beta, 8.0)
    assert denser.to_dict()["vision_config"] == cfg.to_dict()["vision_config"]
    shallower = cfg.replaced(vision_config={"num_hidden_layers": 1})
    assert shallower.vision_config.num_hidden_layers == 1
    assert shallower.vision_config.hidden_size == cfg.vision_config.hidden_size  # rest kept
    with pytest.raises(ConfigError, match="compression_ratio"):
        cfg.replaced(chunk_tokens=8 * beta)  # r no longer K / beta
