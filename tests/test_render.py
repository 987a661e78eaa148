"""Tests of the page renderer: layout rules, auto-fit, missing glyphs, backends, config."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ImageFont

from vist2.errors import ConfigError, Vist2Error
from vist2.render import (
    PageOverflowError,
    PageRenderer,
    RenderConfig,
    default_font_path,
    normalize_text,
    pages_to_tensor,
)

CORPORA = Path(__file__).parents[1].parent / "shared" / "corpora"

# A small page keeps the tests fast: 120 px wide leaves 112 px of line (11 CJK characters at 10 px).
SMALL = dict(page_width=120, page_height=200, font_size=10, min_font_size=10)


def corpus(lang: str, name: str, start: int, n_chars: int) -> str:
    path = CORPORA / lang / name
    if not path.is_file():
        pytest.skip(f"{path} is not here (CI keeps ../shared beside the clone)")
    return path.read_text(encoding="utf-8")[start : start + n_chars]


def dejavu_path() -> str:
    """DejaVuSans (Latin only, no CJK) as shipped by matplotlib, found without importing it."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        pytest.skip("matplotlib is not installed")
    path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return str(path)


def text_width(text: str, size: int = 10) -> float:
    font = ImageFont.truetype(default_font_path(), size, layout_engine=ImageFont.Layout.BASIC)
    return font.getlength(text)


def dark_iou(a: np.ndarray, b: np.ndarray) -> float:
    da, db = a < 128, b < 128
    return (da & db).sum() / max((da | db).sum(), 1)


# -- determinism and basics -----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["atlas", "pillow"])
def test_same_text_same_bytes(backend):
    text = corpus("en", "moby_dick.txt", 40_000, 1500) + corpus("zh", "hongloumeng.txt", 5000, 300)
    config = RenderConfig(backend=backend)
    first = PageRenderer(config).render(text)
    warm = PageRenderer(config)
    warm.render_batch(["something else entirely 😀", corpus("zh", "sanguoyanyi.txt", 900, 500)])
    second = warm.render(text)
    assert first.image.dtype == np.uint8 and first.image.shape == (512, 512)
    assert first.image.tobytes() == second.image.tobytes()
    assert (first.font_size, first.lines, first.missing_chars) == (
        second.font_size,
        second.lines,
        second.missing_chars,
    )


def test_empty_text_is_a_blank_page():
    page = PageRenderer().render("")
    assert page.lines == 0 and page.missing_chars == 0
    assert (page.image == 255).all()


def test_render_batch_matches_render():
    texts = ["first chunk", "second chunk 第二", "", "\n\n"]
    renderer = PageRenderer(RenderConfig(**SMALL))
    batch = renderer.render_batch(texts)
    for text, page in zip(texts, batch, strict=True):
        single = PageRenderer(RenderConfig(**SMALL)).render(text)
        assert page.image.tobytes() == single.image.tobytes()
        assert page.lines == single.lines


def test_pages_to_tensor_scales_paper_and_ink():
    pages = PageRenderer(RenderConfig(**SMALL)).render_batch(["ink here", ""])
    x = pages_to_tensor(pages)
    assert x.shape == (2, 200, 120) and x.dtype == torch.float32
    assert x.max() == 1.0 and -1.0 <= x[0].min() < -0.5
    assert (x[1] == 1.0).all()
    pages[1].image[0, :2] = (0, 255)
    assert pages_to_tensor(pages[1:])[0, 0, :2].tolist() == [-1.0, 1.0]
    with pytest.raises(Vist2Error):
        pages_to_tensor([])


# -- line layout ----------------------------------------------------------------------------------


def test_latin_wraps_between_words():
    text = "The quick brown fox jumps over the lazy dog and keeps running far away from here."
    lines = PageRenderer(RenderConfig(**SMALL)).wrap(text)
    assert len(lines) > 1
    assert "".join(lines) == text  # nothing dropped, nothing added
    assert [w for line in lines for w in line.split()] == text.split()  # no word was split
    for line, nxt in zip(lines, lines[1:], strict=False):
        assert line.endswith(" ")  # breaks fall after a space
        assert text_width(line.rstrip()) <= 112
        # greedy: the next word would not have fitted on this line
        assert text_width(line + nxt.split()[0]) > 112


def test_word_longer_than_a_line_is_broken():
    word = "x" * 60
    lines = PageRenderer(RenderConfig(**SMALL)).wrap("ab " + word + " cd")
    assert lines[0] == "ab "  # the long word starts a new line
    assert "".join(lines) == "ab " + word + " cd"
    assert all(text_width(line.rstrip()) <= 112 for line in lines)
    assert sum(line.count("x") > 0 for line in lines) >= 2


def test_cjk_wraps_per_character():
    text = corpus("zh", "hongloumeng.txt", 2000, 200).replace("\r\n", "").replace("\n", "")
    text = text.replace(" ", "").replace("\u3000", "")
    lines = PageRenderer(RenderConfig(**dict(SMALL, page_height=400))).wrap(text)
    assert "".join(lines) == text
    assert len(lines) >= len(text) // 11
    # Lines are full to within a character (two when kinsoku keeps a mark with its character).
    for line in lines[:-1]:
        assert 112 - 20 < text_width(line) <= 112
    # Kinsoku: no line starts with closing punctuation.
    assert not any(line[0] in "，。、；：？！）》」』”" for line in lines[1:])


def test_random_mixed_text_keeps_every_character_and_the_width():
    rng = np.random.default_rng(0)
    pieces = [
        "word",
        "a",
        "longerword",
        "x" * 40,
        "中文",
        "，",
        "。",
        "「引",
        "」",
        " ",
        "  ",
        "\n",
    ]
    renderer = PageRenderer(RenderConfig(**dict(SMALL, page_height=2000)))
    for _ in range(30):
        text = "".join(rng.choice(pieces, size=40))
        lines = renderer.wrap(text)
        assert "".join(lines) == text.replace("\n", "")
        assert len(lines) >= text.count("\n")
        for line in lines:
            ink = line.rstrip(" ")
            assert len(ink) <= 1 or text_width(ink) <= 112, line


def test_ink_stays_inside_the_margins():
    page = PageRenderer().render(corpus("en", "moby_dick.txt", 30_000, 4000))
    ink = page.image < 255
    assert ink.any()
    assert not ink[:, :2].any() and not ink[:, -2:].any()
    assert not ink[:2].any() and not ink[-2:].any()


def test_char_boxes_hold_the_ink_of_their_characters():
    renderer = PageRenderer(RenderConfig(**SMALL))
    text = "The whale, Ishmael said,\nwas white. 白鲸 returns"
    page = renderer.render(text)
    normalised, boxes = renderer.char_boxes(text)  # (n_drawn, 5)
    drawn = [i for i, ch in enumerate(normalised) if not ch.isspace()]
    assert boxes[:, 0].tolist() == drawn
    covered = np.zeros_like(page.image, dtype=bool)
    for i, x0, y0, x1, y1 in boxes.tolist():
        assert x0 < x1 and y0 < y1
        assert (page.image[y0:y1, x0:x1] < 128).any(), f"no ink in the box of {normalised[i]!r}"
        covered[y0:y1, max(x0 - 1, 0) : x1 + 1] = True  # a glyph may overhang by a pixel
    assert not (page.image < 128)[~covered].any()
    assert len({(y0, y1) for _, _, y0, _, y1 in boxes.tolist()}) == page.lines
    assert renderer.char_boxes("")[1].shape == (0, 5)


@pytest.mark.parametrize(
    ("text", "n_lines"),
    [
        ("a\n\nb", 3),
        ("a\n", 1),
        ("\n\n\n", 3),
        ("a\r\nb\rc", 3),
        ("one\n\n\ntwo\n", 4),
        ("   ", 1),
    ],
)
def test_newlines_and_blank_lines_take_lines(text, n_lines):
    renderer = PageRenderer(RenderConfig(**SMALL))
    assert renderer.render(text).lines == n_lines
    assert len(renderer.wrap(text)) == n_lines


def test_blank_line_takes_a_line_of_height():
    renderer = PageRenderer(RenderConfig(**SMALL))
    rows_with_ink = lambda img: np.flatnonzero((img < 128).any(axis=1))  # noqa: E731
    two = rows_with_ink(renderer.render("Ab\nAb").image)
    three = rows_with_ink(renderer.render("Ab\n\nAb").image)
    assert three[-1] - two[-1] == 12  # the second line moved down by one line height


def test_normalize_text():
    assert normalize_text("a\r\nb\rc\td\x0be\u2028f") == "a\nb\nc    d\ne\nf"


# -- auto-fit and overflow ------------------------------------------------------------------------


def test_auto_fit_picks_the_largest_size_that_fits():
    text = corpus("en", "moby_dick.txt", 30_000, 4000)
    config = RenderConfig()
    page = PageRenderer(config).render(text)
    assert config.min_font_size <= page.font_size < config.font_size
    line_height = round(page.font_size * config.line_spacing)
    assert page.lines * line_height <= config.page_height - 2 * config.margin
    # One size up does not fit.
    bigger = RenderConfig(
        font_size=page.font_size + 1, min_font_size=page.font_size + 1, overflow="error"
    )
    with pytest.raises(PageOverflowError):
        PageRenderer(bigger).render(text)


def test_a_fixed_line_pitch_keeps_every_line_inside_one_cell_row():
    """line_height=16 with margin 0 on a 128 px page: lines sit on a 16 px grid at every font
    size auto-fit picks, so none straddles the 32 px cells of a windowed encoder."""
    config = RenderConfig(
        page_width=128, page_height=128, font_size=12, min_font_size=7, margin=0, line_height=16
    )
    renderer = PageRenderer(config)
    for n_chars in (60, 150, 190):  # 12 px, then smaller sizes as the text grows
        text = corpus("en", "moby_dick.txt", 30_000, n_chars)
        _, boxes = renderer.char_boxes(text)  # (n_drawn, 5): index, x0, y0, x1, y1
        assert (
            len(boxes) and (boxes[:, 2] % 16 == 0).all() and (boxes[:, 4] - boxes[:, 2] == 16).all()
        )
        assert (boxes[:, 2] // 32 == (boxes[:, 4] - 1) // 32).all()  # one cell row per line
        page = renderer.render(text)
        assert page.lines <= 8
        assert (page.image[16 * page.lines :] == 255).all()  # nothing below the last line
    assert page.font_size < config.font_size


def test_overflow_error_names_the_chunk():
    text = corpus("en", "moby_dick.txt", 30_000, 6000)
    renderer = PageRenderer(RenderConfig(**SMALL, overflow="error"))
    with pytest.raises(PageOverflowError, match="chunk 7") as info:
        renderer.render(text, index=7)
    message = str(info.value)
    assert "6000 characters" in message and "[10]" in message
    assert "min_font_size" in message and "chunk size" in message
    with pytest.raises(PageOverflowError, match="chunk 1"):
        renderer.render_batch(["fits", text])


# -- missing glyphs and fallback ------------------------------------------------------------------


def test_missing_emoji_is_counted_and_drawn():
    renderer = PageRenderer(RenderConfig(**SMALL))
    page = renderer.render("a😀b")
    assert page.missing_chars == 1
    # The box sits after "a": ink in its em square, which a space would leave blank.
    x0 = 4 + round(text_width("a"))
    box = page.image[4:16, x0 : x0 + 10]
    assert (box < 128).sum() >= 20
    assert (renderer.render("a").image[:, x0:] == 255).all()


def test_whitespace_and_format_characters_are_never_missing():
    page = PageRenderer(RenderConfig(**SMALL)).render(" \t\n\u3000\u00a0\ufeffa\u200db\n")
    assert page.missing_chars == 0


def test_fallback_font_supplies_missing_characters():
    main = dejavu_path()
    text = "Hello 世界, 你好!"
    without = PageRenderer(RenderConfig(**SMALL, font_path=main)).render(text)
    assert without.missing_chars == 4
    with_fallback = PageRenderer(
        RenderConfig(**SMALL, font_path=main, fallback_font_path=default_font_path())
    ).render(text)
    assert with_fallback.missing_chars == 0
    assert with_fallback.image.tobytes() != without.image.tobytes()


# -- backends -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "name", "start", "n_chars"),
    [("en", "moby_dick.txt", 30_000, 2500), ("zh", "hongloumeng.txt", 3000, 1500)],
)
def test_backends_give_near_identical_pages(lang, name, start, n_chars):
    text = corpus(lang, name, start, n_chars)
    atlas = PageRenderer(RenderConfig(backend="atlas")).render(text)
    pillow = PageRenderer(RenderConfig(backend="pillow")).render(text)
    assert (atlas.lines, atlas.font_size) == (pillow.lines, pillow.font_size)
    assert (atlas.image < 128).sum() > 5000  # legible amount of ink, not a blank page
    assert dark_iou(atlas.image, pillow.image) > 0.95
    # They differ only where anti-aliased fringes of neighbouring glyphs overlap.
    diff = np.abs(atlas.image.astype(int) - pillow.image.astype(int))
    assert (diff > 0).mean() < 0.01


def test_backends_agree_with_fallback_kerning_font_and_missing_boxes():
    # DejaVuSans has a 'kern' table, so the pillow backend draws it glyph by glyph.
    config = dict(SMALL, page_height=300, font_path=dejavu_path())
    text = "AVATAR To Ty. 中文 and 🧠 too\n" * 3  # DejaVu has 😀 but not 🧠
    atlas = PageRenderer(RenderConfig(**config, fallback_font_path=default_font_path())).render(
        text
    )
    pillow = PageRenderer(
        RenderConfig(**config, fallback_font_path=default_font_path(), backend="pillow")
    ).render(text)
    assert atlas.missing_chars == pillow.missing_chars == 3
    assert atlas.lines == pillow.lines
    assert dark_iou(atlas.image, pillow.image) > 0.9


# -- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"font_size": 0}, "font_size"),
        ({"page_width": "512"}, "page_width"),
        ({"min_font_size": 12}, "min_font_size"),
        ({"line_spacing": 0.0}, "line_spacing"),
        ({"line_spacing": float("nan")}, "line_spacing"),
        ({"line_height": 0}, "line_height"),
        ({"line_height": "16"}, "line_height"),
        ({"line_height": 600}, "line_height"),
        ({"margin": -1}, "margin"),
        ({"margin": 300}, "margin"),
        ({"backend": "cairo"}, "backend"),
        ({"font_path": "/no/such/font.ttf"}, "font_path"),
        ({"fallback_font_path": "/no/such/fallback.ttf"}, "fallback_font_path"),
    ],
)
def test_config_errors_name_the_field(fields, name):
    with pytest.raises(ConfigError, match=f"RenderConfig.{name}"):
        RenderConfig(**fields)


def test_config_font_error_names_the_path():
    with pytest.raises(ConfigError, match="/no/such/font.ttf"):
        RenderConfig(font_path="/no/such/font.ttf")


def test_config_dict_round_trip():
    config = RenderConfig(page_width=256, font_size=8, min_font_size=5, backend="pillow")
    assert RenderConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert RenderConfig.from_dict({"font_size": 12}) == RenderConfig(font_size=12)
    with pytest.raises(ConfigError, match="fontsize"):
        RenderConfig.from_dict({"fontsize": 12})


def test_default_font_is_found():
    assert Path(default_font_path()).is_file()


def test_hard_line_breaks_reflow_with_visible_marks_when_they_overflow():
    verse = "\n".join(f"line {i}" for i in range(40))  # 40 short lines, a 128 px page has 17
    config = RenderConfig(page_width=128, page_height=128, font_size=8, min_font_size=6)
    page = PageRenderer(config).render(verse)
    assert page.reflowed and page.lines < 40
    with pytest.raises(PageOverflowError):
        PageRenderer(RenderConfig(**{**config.to_dict(), "overflow": "error"})).render(verse)
    lines = PageRenderer(config).wrap(verse)
    assert "\u21b5" in "".join(lines) and "line 39" in "".join(lines)  # nothing dropped
