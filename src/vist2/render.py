"""Page renderer: one text chunk -> one grayscale page image that the vision encoder reads.

What is notable here
- One layout, two rasterisers. `PageRenderer` decides which characters go on which line and their
  x positions once, from integer per-character advances (hinted FreeType metrics, Pillow's basic
  layout, no shaping). Backend "atlas" stamps cached glyph bitmaps into the page with a single
  numpy scatter-max per page; backend "pillow" draws the same positions with `ImageDraw.text`
  (the reference rasteriser). Only rasterisation differs, so the backends agree up to blend
  rounding where glyphs touch.
- Line breaking: Latin text at spaces, CJK (East Asian wide/fullwidth characters) per character
  with a light kinsoku rule (no line starts with closing punctuation such as "，。」" or ends with
  an opening one such as "「"). A word longer than a line starts a new line and is broken between
  characters. Spaces at a wrap hang past the margin (invisible); nothing is dropped.
- Newlines end lines and a blank line takes a line of height ("a\\n\\nb" is 3 lines, a trailing
  "\\n" adds none, like `str.splitlines`). "\\r\\n", "\\r" and the other line separators become
  "\\n" and a tab becomes 4 spaces (`normalize_text`). Format characters (BOM, zero-width joiners,
  variation selectors) take no space and are not drawn.
- Never silently lossy: text that does not fit at `font_size` is laid out at the largest size in
  [min_font_size, font_size] that fits (auto-fit); below that `PageOverflowError` says what to
  change. Characters no font has (and control characters) are drawn as a hollow em box and
  counted in `missing_chars`; whitespace is never missing.
- Deterministic: same text + config -> same bytes, whatever is already in the caches.
- Caches: font cmaps (fontTools), Pillow fonts and glyph atlases are module-level and shared by
  all renderers. Each renderer keeps flat numpy tables (codepoint -> slot -> advance and packed
  glyph pixels), so a page costs a few numpy calls plus a Python loop over its lines, not over
  its characters.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import importlib.resources
import math
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFont

from vist2.errors import ConfigError, Vist2Error

__all__ = [
    "BACKENDS",
    "Glyph",
    "GlyphAtlas",
    "PageOverflowError",
    "PageRenderer",
    "RenderConfig",
    "RenderedPage",
    "default_font_path",
    "glyph_atlas",
    "normalize_text",
    "pages_to_tensor",
]

BACKENDS = ("atlas", "pillow")
OVERFLOW_POLICIES = ("reflow", "error")
NEWLINE_MARK = " \u21b5 "  # what "reflow" draws for a newline: a visible return arrow
TAB_SPACES = 4
_DEFAULT_FONT_PACKAGE = "paperang_p2_fonts_cjk"
_DEFAULT_FONT_FILE = "wqy-microhei.ttc"


def default_font_path() -> str:
    """Path of WenQuanYi Micro Hei (Latin + CJK), shipped by the PyPI package paperang-p2-fonts-cjk."""
    hint = "install it with `pip install paperang-p2-fonts-cjk` or set RenderConfig.font_path"
    try:
        path = importlib.resources.files(_DEFAULT_FONT_PACKAGE) / "fonts" / _DEFAULT_FONT_FILE
    except ModuleNotFoundError:
        raise Vist2Error(f"the default font package is not installed; {hint}") from None
    if not path.is_file():
        raise Vist2Error(f"the default font {path} is missing; {hint}")
    return str(path)


# -- config ---------------------------------------------------------------------------------------


@dataclass
class RenderConfig:
    """How a text chunk becomes a page. Every field is checked in `__post_init__`."""

    page_width: int = 512
    """Page width in pixels."""
    page_height: int = 512
    """Page height in pixels."""
    font_path: str | None = None
    """Any TTF/TTC file (face 0 of a collection); None -> `default_font_path()`."""
    fallback_font_path: str | None = None
    """A second font for characters the main font lacks; None -> none."""
    font_size: int = 10
    """Font size in pixels, the size used whenever the text fits."""
    min_font_size: int = 6
    """Auto-fit lower bound; equal to `font_size` disables auto-fit."""
    line_spacing: float = 1.2
    """Line height = round(font_size * line_spacing) pixels."""
    line_height: int | None = None
    """A fixed line pitch in pixels at every font size, overriding `line_spacing`: with
    `margin` 0 and a pitch that divides a windowed encoder's cell (`VIST2Config.vision_window`),
    no line straddles two cells. None -> round(font_size * line_spacing)."""
    margin: int = 4
    """Blank border in pixels on every side."""
    backend: str = "atlas"
    """"atlas" (cached glyph bitmaps placed with numpy) or "pillow" (ImageDraw.text); same layout."""
    overflow: str = "reflow"
    """When text does not fit even at `min_font_size`: "reflow" joins its lines, each newline
    drawn as a visible "↵", and fits again (raising only if that fails too); "error" raises."""

    def __post_init__(self) -> None:
        for name, minimum in (
            ("page_width", 1),
            ("page_height", 1),
            ("font_size", 1),
            ("min_font_size", 1),
            ("margin", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"RenderConfig.{name} must be an int, got {value!r}")
            if value < minimum:
                raise ConfigError(f"RenderConfig.{name} must be >= {minimum}, got {value}")
        if self.min_font_size > self.font_size:
            raise ConfigError(
                f"RenderConfig.min_font_size must be <= font_size ({self.font_size}), "
                f"got {self.min_font_size}"
            )
        spacing = self.line_spacing
        if isinstance(spacing, bool) or not isinstance(spacing, int | float):
            raise ConfigError(f"RenderConfig.line_spacing must be a number, got {spacing!r}")
        if not math.isfinite(spacing) or spacing <= 0:
            raise ConfigError(
                f"RenderConfig.line_spacing must be a finite number > 0, got {spacing}"
            )
        if round(self.min_font_size * spacing) < 1:
            raise ConfigError(
                f"RenderConfig.line_spacing={spacing} makes lines at min_font_size "
                f"({self.min_font_size}) less than 1 pixel high"
            )
        pitch = self.line_height
        if pitch is not None and (isinstance(pitch, bool) or not isinstance(pitch, int)):
            raise ConfigError(f"RenderConfig.line_height must be an int or None, got {pitch!r}")
        if pitch is not None and pitch < 1:
            raise ConfigError(f"RenderConfig.line_height must be >= 1, got {pitch}")
        usable_w = self.page_width - 2 * self.margin
        usable_h = self.page_height - 2 * self.margin
        line_h = pitch or max(round(self.font_size * spacing), self.font_size)
        if pitch is not None and usable_h < pitch:
            raise ConfigError(
                f"RenderConfig.line_height={pitch} is taller than the {usable_h} px a "
                f"{self.page_height} px page leaves inside its margins"
            )
        if usable_w < self.font_size or usable_h < line_h:
            raise ConfigError(
                f"RenderConfig.margin={self.margin} leaves {usable_w}x{usable_h} px of a "
                f"{self.page_width}x{self.page_height} page, less than one {self.font_size} px line; "
                "use a smaller margin or font_size, or a bigger page"
            )
        if self.overflow not in OVERFLOW_POLICIES:
            raise ConfigError(
                f"RenderConfig.overflow must be one of {list(OVERFLOW_POLICIES)}, got {self.overflow!r}"
            )
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"RenderConfig.backend must be one of {list(BACKENDS)}, got {self.backend!r}"
            )
        for name in ("font_path", "fallback_font_path"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise ConfigError(f"RenderConfig.{name} must be a str path or None, got {value!r}")
            if not os.path.isfile(value):
                raise ConfigError(f"RenderConfig.{name}: font file {value!r} does not exist")

    def line_pitch(self, size: int) -> int:
        """Pixels from one line's top to the next's at font size `size`."""
        return self.line_height or round(size * self.line_spacing)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; `from_dict(to_dict())` gives an equal config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RenderConfig:
        """Build from a dict (missing keys take defaults); unknown keys raise `ConfigError`."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"RenderConfig.from_dict needs a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"RenderConfig has no field(s) {unknown}; known fields: {sorted(known)}"
            )
        return cls(**data)


@dataclass
class RenderedPage:
    """One rendered page and what it took to make it."""

    image: np.ndarray
    """(page_height, page_width) uint8, 255 = paper, 0 = ink."""
    font_size: int
    """Font size actually used (after auto-fit)."""
    missing_chars: int
    """Characters no font had; each is drawn as a hollow em box."""
    lines: int
    """Lines used (a blank line counts)."""
    reflowed: bool = False
    """True when the text only fitted with its newlines drawn inline as "↵" (overflow="reflow")."""


class PageOverflowError(Vist2Error):
    """The text does not fit the page even at `min_font_size`."""

    def __init__(
        self,
        message: str,
        *,
        index: int | None = None,
        n_chars: int = 0,
        sizes_tried: Sequence[int] = (),
    ):
        super().__init__(message)
        self.index = index
        self.n_chars = n_chars
        self.sizes_tried = list(sizes_tried)


# -- text normalisation and character classes ---------------------------------------------------

# Line separators that str.splitlines knows, beyond "\n" and "\r".
_RARE_LINE_SEPARATORS = re.compile("[\v\f\x1c\x1d\x1e\x85\u2028\u2029]")

# Kinsoku (line-breaking rule for CJK): a line never starts with a closing mark and never ends
# with an opening one. ASCII marks already glue to their word; they are listed for CJK neighbours.
_CLOSING = set(
    "，。、；：？！．…‥）》」』】〕〉｝］｠〗〙〛〞”’・·ー々〜～ぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮ"
    "％‰℃,.;:?!)]}»%"
)
_OPENING = set("（《「『【〔〈｛［｟〖〘〚〝“‘([{«")


def normalize_text(text: str) -> str:
    """The text as laid out: "\\r\\n", "\\r" and other line separators -> "\\n", tab -> 4 spaces."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\t" in text:
        text = text.replace("\t", " " * TAB_SPACES)
    if _RARE_LINE_SEPARATORS.search(text):
        text = _RARE_LINE_SEPARATORS.sub("\n", text)
    return text


def _is_zero_width(ch: str) -> bool:
    """Format characters and variation selectors: no advance, nothing drawn, never missing."""
    cp = ord(ch)
    return unicodedata.category(ch) == "Cf" or 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF


# -- fonts and glyph atlases ----------------------------------------------------------------------


@dataclass(frozen=True)
class _FontFile:
    path: str
    codepoints: frozenset[int]  # the cmap of face 0
    has_kern: bool  # a legacy 'kern' table: Pillow's basic layout then kerns pairs


@functools.lru_cache(maxsize=16)
def _font_file(path: str) -> _FontFile:
    try:
        font = TTFont(path, fontNumber=0, lazy=True)
        codepoints = frozenset(font.getBestCmap() or {})
        has_kern = "kern" in font
        font.close()
    except Exception as err:  # fontTools raises many types for a bad file
        raise Vist2Error(f"cannot read font {path!r}: {err}") from err
    return _FontFile(path, codepoints, has_kern)


@functools.lru_cache(maxsize=64)
def _pil_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    try:
        # BASIC layout: no shaping, so a string's glyphs sit at the sum of per-character advances.
        return ImageFont.truetype(path, size, index=0, layout_engine=ImageFont.Layout.BASIC)
    except OSError as err:
        raise Vist2Error(f"cannot load font {path!r} at size {size}: {err}") from err


@dataclass(frozen=True)
class Glyph:
    """A rendered glyph, placed relative to the pen position on the baseline."""

    bitmap: np.ndarray  # (h, w) uint8 ink coverage, 255 = full ink; (0, 0) when blank
    left: int  # x of bitmap column 0 relative to the pen
    top: int  # y of bitmap row 0 relative to the baseline (negative = above it)
    advance: int  # pen advance in pixels (hinted, rounded)
    exact: bool  # FreeType's advance was already an integer (Pillow draws a run at the same x)


class GlyphAtlas:
    """Glyphs of one font at one pixel size, each rendered once with Pillow/FreeType."""

    def __init__(self, path: str, size: int):
        self.path = path
        self.size = size
        self.font = _pil_font(path, size)
        self.glyphs: dict[str, Glyph] = {}

    def glyph(self, ch: str) -> Glyph:
        glyph = self.glyphs.get(ch)
        if glyph is None:
            glyph = self.glyphs[ch] = self._render(ch)
        return glyph

    def _render(self, ch: str) -> Glyph:
        advance = self.font.getlength(ch)
        left, top, right, bottom = self.font.getbbox(ch, anchor="ls")
        if right <= left or bottom <= top:
            bitmap = np.zeros((0, 0), np.uint8)
        else:
            # Drawn exactly as ImageDraw.text draws it on a page, at an integer pen position.
            img = Image.new("L", (right - left, bottom - top), 0)
            ImageDraw.Draw(img).text((-left, -top), ch, fill=255, font=self.font, anchor="ls")
            bitmap = np.array(img, dtype=np.uint8)  # (h, w)
        return Glyph(bitmap, left, top, round(advance), advance == round(advance))


@functools.lru_cache(maxsize=64)
def glyph_atlas(path: str, size: int) -> GlyphAtlas:
    """The shared atlas of `path` at `size` pixels."""
    return GlyphAtlas(path, size)


def _box_geometry(size: int, ascent: int, descent: int) -> tuple[int, int, int, int]:
    """Hollow em box for a missing character: (left, top, width, height) from the pen/baseline."""
    top = -round(size * ascent / max(ascent + descent, 1))
    width = max(size - 2, 1)  # 1 px gap on each side so neighbouring boxes stay apart
    return 1, top, width, size


def _box_glyph(size: int, ascent: int, descent: int) -> Glyph:
    left, top, width, height = _box_geometry(size, ascent, descent)
    bitmap = np.zeros((height, width), np.uint8)  # (h, w) coverage
    bitmap[[0, -1], :] = 255
    bitmap[:, [0, -1]] = 255
    return Glyph(bitmap, left, top, size, True)


# -- per-renderer tables --------------------------------------------------------------------------

_NO_FONT, _MAIN, _FALLBACK = 0, 1, 2


class _CharTable:
    """Slots for the characters a renderer has seen, with their size-independent classes."""

    def __init__(self, main: _FontFile, fallback: _FontFile | None):
        self.main = main
        self.fallback = fallback
        self.chars: list[str] = []
        self.slot_of_cp = np.full(128, -1, np.int32)  # (max codepoint + 1,) -> slot, -1 = unseen
        self._rows: list[tuple[int, bool, bool, bool, bool, bool, bool, bool]] = []
        self._arrays_len = -1

    def slots(self, codepoints: np.ndarray) -> np.ndarray:
        """(n,) uint32 codepoints -> (n,) int32 slots, registering characters not seen before."""
        if codepoints.size == 0:
            return np.zeros(0, np.int32)
        top = int(codepoints.max())
        if top >= self.slot_of_cp.size:
            grown = np.full(max(top + 1, 2 * self.slot_of_cp.size), -1, np.int32)
            grown[: self.slot_of_cp.size] = self.slot_of_cp
            self.slot_of_cp = grown
        slots = self.slot_of_cp[codepoints]  # (n,)
        unseen = slots < 0
        if unseen.any():
            for cp in np.unique(codepoints[unseen]).tolist():
                self.slot_of_cp[cp] = len(self.chars)
                self._register(chr(cp))
            slots = self.slot_of_cp[codepoints]
        return slots

    def _register(self, ch: str) -> None:
        cp = ord(ch)
        newline = ch == "\n"
        space = not newline and ch.isspace()
        font = _NO_FONT
        if newline or _is_zero_width(ch):
            pass  # never drawn, never missing
        elif unicodedata.category(ch) == "Cc" and not space:
            pass  # a control character: drawn as missing even if a font maps it to a blank glyph
        elif cp in self.main.codepoints:
            font = _MAIN
        elif self.fallback is not None and cp in self.fallback.codepoints:
            font = _FALLBACK
        # Spaces are never missing (they take the main font's space advance) and never drawn.
        missing = font == _NO_FONT and not (newline or space or _is_zero_width(ch))
        drawn = missing or (font != _NO_FONT and not space)
        wide = unicodedata.east_asian_width(ch) in ("W", "F")
        self.chars.append(ch)
        self._rows.append(
            (font, drawn, missing, space, newline, wide, ch in _CLOSING, ch in _OPENING)
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """Per-slot class arrays, each (n_slots,)."""
        if self._arrays_len != len(self._rows):
            cols = list(zip(*self._rows, strict=True)) if self._rows else [()] * 8
            names = ("font", "drawn", "missing", "space", "newline", "wide", "closing", "opening")
            self._arrays = {
                name: np.array(col, np.uint8 if name == "font" else bool)
                for name, col in zip(names, cols, strict=True)
            }
            self._arrays_len = len(self._rows)
        return self._arrays


class _SizeTable:
    """Per font size: advance and packed glyph pixels of every slot, for vectorised placement."""

    def __init__(self, chars: _CharTable, size: int, main_path: str, fallback_path: str | None):
        self.chars = chars
        self.size = size
        self.main = glyph_atlas(main_path, size)
        self.fallback = glyph_atlas(fallback_path, size) if fallback_path else None
        self.ascent, self.descent = self.main.font.getmetrics()
        self.box = _box_glyph(size, self.ascent, self.descent)
        self.space_advance = self.main.glyph(" ").advance
        self.n = 0
        self.advance = np.zeros(0, np.int32)  # (n_slots,)
        self.run_safe = np.zeros(0, bool)  # (n_slots,) Pillow may draw it inside a run
        self.pix_start = np.zeros(0, np.int64)  # (n_slots,) first entry in the packed pixels
        self.pix_count = np.zeros(0, np.int64)  # (n_slots,) non-zero pixels of the glyph
        self.pix_dy = np.zeros(0, np.int64)  # (n_pixels,) row relative to the baseline
        self.pix_dx = np.zeros(0, np.int64)  # (n_pixels,) column relative to the pen
        self.pix_cov = np.zeros(0, np.uint8)  # (n_pixels,) ink coverage, 255 = full ink
        self.reach = 0  # max |dy|, |dx| of any packed pixel: the padding placement needs
        self._flat: tuple[int, np.ndarray] | None = None  # (canvas width, (n_pixels,) offsets)

    def atlas(self, font: int) -> GlyphAtlas:
        return self.main if font == _MAIN else self.fallback  # type: ignore[return-value]

    def flat_offsets(self, width: int) -> np.ndarray:
        """(n_pixels,) int64 offsets dy * width + dx of every packed pixel in a flat canvas."""
        if self._flat is None or self._flat[0] != width:
            self._flat = (width, self.pix_dy * width + self.pix_dx)
        return self._flat[1]

    def update(self) -> None:
        """Extend the tables to the slots registered since the last call."""
        total = len(self.chars.chars)
        if total == self.n:
            return
        classes = self.chars.arrays()
        kern = {_MAIN: _font_file(self.main.path).has_kern}
        if self.fallback is not None:
            kern[_FALLBACK] = _font_file(self.fallback.path).has_kern
        advance, run_safe, count, dys, dxs, covs = [], [], [], [], [], []
        for slot in range(self.n, total):
            ch, font = self.chars.chars[slot], int(classes["font"][slot])
            glyph = None
            if font != _NO_FONT:
                glyph = self.atlas(font).glyph(ch)
                advance.append(glyph.advance)
            elif classes["missing"][slot]:
                glyph = self.box
                advance.append(self.size)
            elif classes["space"][slot]:
                advance.append(self.space_advance)
            else:  # newline, zero-width
                advance.append(0)
            run_safe.append(font != _NO_FONT and not kern[font] and glyph.exact)
            if glyph is not None and classes["drawn"][slot]:
                rows, cols = np.nonzero(glyph.bitmap)  # (k,), (k,)
                dys.append(rows + glyph.top)
                dxs.append(cols + glyph.left)
                covs.append(glyph.bitmap[rows, cols])
                count.append(rows.size)
            else:
                count.append(0)
        new_count = np.array(count, np.int64)
        new_start = self.pix_dy.size + np.cumsum(new_count) - new_count
        self.advance = np.concatenate([self.advance, np.array(advance, np.int32)])
        self.run_safe = np.concatenate([self.run_safe, np.array(run_safe, bool)])
        self.pix_start = np.concatenate([self.pix_start, new_start])
        self.pix_count = np.concatenate([self.pix_count, new_count])
        if dys:
            self.pix_dy = np.concatenate([self.pix_dy, *dys]).astype(np.int64)
            self.pix_dx = np.concatenate([self.pix_dx, *dxs]).astype(np.int64)
            self.pix_cov = np.concatenate([self.pix_cov, *covs])
            self.reach = max(
                self.reach, int(np.abs(self.pix_dy).max()), int(np.abs(self.pix_dx).max())
            )
            self._flat = None
        self.n = total


# -- layout ---------------------------------------------------------------------------------------


@dataclass
class _Text:
    """Size-independent arrays of one normalised text (n characters)."""

    text: str
    slots: np.ndarray  # (n,) int32
    drawn: np.ndarray  # (n,) bool: glyph or replacement box to draw
    newline_pos: list[int]  # positions of "\n"
    last_ink: list[int]  # (n,) index of the last non-space, non-newline char at or before i, or -1
    breaks: list[int]  # positions where a line may start (sorted)
    breaks_last_ink: list[int]  # last_ink[b - 1] for each break b (non-decreasing)
    breaks_ink_stop: np.ndarray  # (n_breaks,) int64 last_ink[b - 1] + 1: where that ink ends
    missing: int


@dataclass
class _Layout:
    font_size: int
    line_starts: list[int]  # first character of each line
    line_ends: list[int]  # one past the last character of each line (excludes the "\n")
    cum: np.ndarray  # (n + 1,) int64 pen x from the text start, cum[i] = sum(advance[:i])
    line_height: int
    baseline: int  # baseline offset from the top of a line box


class PageRenderer:
    """Renders text chunks into pages; reuse one renderer for many pages (its caches warm up)."""

    def __init__(self, config: RenderConfig | None = None):
        self.config = config if config is not None else RenderConfig()
        self.main_path = self.config.font_path or default_font_path()
        self.fallback_path = self.config.fallback_font_path
        main = _font_file(self.main_path)
        fallback = _font_file(self.fallback_path) if self.fallback_path else None
        self._chars = _CharTable(main, fallback)
        self._sizes: dict[int, _SizeTable] = {}

    # -- public ----------------------------------------------------------------------------------

    def render(self, text: str, index: int | None = None) -> RenderedPage:
        """Render one chunk; `index` only names the chunk in error messages."""
        prepared, layout, reflowed = self._fit_or_reflow(text, index)
        if layout.font_size == 0:  # empty text
            return RenderedPage(self._blank(), self.config.font_size, 0, 0)
        if self.config.backend == "atlas":
            image = self._rasterise_atlas(prepared, layout)
        else:
            image = self._rasterise_pillow(prepared, layout)
        return RenderedPage(
            image, layout.font_size, prepared.missing, len(layout.line_starts), reflowed
        )

    def render_batch(self, texts: Sequence[str]) -> list[RenderedPage]:
        """Render many chunks (chunk i is `index=i` in errors), sharing fonts, atlases and tables."""
        # Register every new character of the batch in one pass, then lay pages out one by one.
        normalised = [normalize_text(t) for t in texts]
        self._chars.slots(_codepoints("".join(normalised)))
        return [self.render(t, index=i) for i, t in enumerate(normalised)]

    def wrap(self, text: str, index: int | None = None) -> list[str]:
        """The lines `render` would draw, as text (after auto-fit; hanging spaces included)."""
        prepared, layout, _ = self._fit_or_reflow(text, index)
        return [
            prepared.text[s:e] for s, e in zip(layout.line_starts, layout.line_ends, strict=True)
        ]

    def char_boxes(self, text: str) -> tuple[str, np.ndarray]:
        """Where `render` draws each character: the normalised text and (n_drawn, 5) int64 rows
        (index into that text, x0, y0, x1, y1) in page pixels; a box spans the character's
        advance and its line's height. Spaces and newlines are not drawn, so have no box."""
        prepared, layout, _ = self._fit_or_reflow(text, None)
        if layout.font_size == 0:
            return prepared.text, np.zeros((0, 5), np.int64)
        drawn, x, y = self._placements(prepared, layout)  # each (n_drawn,)
        advance = layout.cum[drawn + 1] - layout.cum[drawn]  # (n_drawn,)
        top = y - layout.baseline  # (n_drawn,)
        boxes = np.stack([drawn, x, top, x + advance, top + layout.line_height], axis=1)
        return prepared.text, boxes.astype(np.int64)  # (n_drawn, 5)

    # -- layout ----------------------------------------------------------------------------------

    def _blank(self) -> np.ndarray:
        return np.full((self.config.page_height, self.config.page_width), 255, np.uint8)

    def _size_table(self, size: int) -> _SizeTable:
        table = self._sizes.get(size)
        if table is None:
            table = self._sizes[size] = _SizeTable(
                self._chars, size, self.main_path, self.fallback_path
            )
        table.update()
        return table

    def _prepare(self, text: str) -> _Text:
        text = normalize_text(text)
        slots = self._chars.slots(_codepoints(text))  # (n,)
        c = self._chars.arrays()
        newline = c["newline"][slots]  # (n,) bool
        space = c["space"][slots] | newline  # (n,) bool: no ink, breaks a word
        wide = c["wide"][slots]  # (n,) bool
        n = slots.size
        idx = np.arange(n)
        last_ink = np.maximum.accumulate(np.where(space, -1, idx))  # (n,)
        # A line may start at i when i is not a space and follows a space or a wide char, or is
        # wide itself -- unless i is a closing mark, i - 1 an opening one, or i - 1 a newline
        # (those lines start at the paragraph start anyway).
        can_break = np.zeros(n, bool)  # (n,)
        if n > 1:
            can_break[1:] = (
                ~space[1:]
                & (space[:-1] | wide[:-1] | wide[1:])
                & ~newline[:-1]
                & ~c["closing"][slots[1:]]
                & ~c["opening"][slots[:-1]]
            )
        breaks = np.flatnonzero(can_break)  # (n_breaks,)
        return _Text(
            text=text,
            slots=slots,
            drawn=c["drawn"][slots],
            newline_pos=np.flatnonzero(newline).tolist(),
            last_ink=last_ink.tolist(),
            breaks=breaks.tolist(),
            breaks_last_ink=last_ink[breaks - 1].tolist(),
            breaks_ink_stop=last_ink[breaks - 1] + 1,
            missing=int(c["missing"][slots].sum()),
        )

    def _fit_or_reflow(self, text: str, index: int | None) -> tuple[_Text, _Layout, bool]:
        """Auto-fit; on overflow with overflow="reflow", again with newlines drawn inline."""
        prepared = self._prepare(text)
        try:
            return prepared, self._fit(prepared, index), False
        except PageOverflowError:
            # Hard line breaks (verse, tables of contents, code) can need more lines than a page
            # has; drawn inline as visible marks, the same characters usually fit.
            if self.config.overflow != "reflow" or "\n" not in prepared.text:
                raise
        prepared = self._prepare(prepared.text.replace("\n", NEWLINE_MARK))
        return prepared, self._fit(prepared, index), True

    def _fit(self, t: _Text, index: int | None) -> _Layout:
        """Lay out at the largest size in [min_font_size, font_size] that fits, else raise."""
        cfg = self.config
        if not t.text:
            return _Layout(0, [], [], np.zeros(1, np.int64), 0, 0)
        tried = []
        for size in range(cfg.font_size, cfg.min_font_size - 1, -1):
            tried.append(size)
            layout = self._layout(t, size)
            if layout is not None:
                return layout
        where = f"chunk {index}" if index is not None else "text"
        max_lines = (cfg.page_height - 2 * cfg.margin) // cfg.line_pitch(cfg.min_font_size)
        raise PageOverflowError(
            f"{where} ({len(t.text)} characters) does not fit a {cfg.page_width}x{cfg.page_height} "
            f"page at any font size tried ({tried} px; at {cfg.min_font_size} px the page holds "
            f"{max_lines} lines). Use a bigger page (page_width/page_height), a smaller "
            "min_font_size, or a smaller chunk size.",
            index=index,
            n_chars=len(t.text),
            sizes_tried=tried,
        )

    def _layout(self, t: _Text, size: int) -> _Layout | None:
        """Greedy line breaking at one font size; None when it needs more lines than fit."""
        cfg = self.config
        table = self._size_table(size)
        line_height = cfg.line_pitch(size)
        max_lines = (cfg.page_height - 2 * cfg.margin) // line_height
        avail = cfg.page_width - 2 * cfg.margin
        advance = table.advance[t.slots].astype(np.int64)  # (n,)
        # Cheap rejections: every "\n" ends a line; ink can't exceed the total line length.
        ink_width = int(np.minimum(advance[t.drawn], avail).sum())
        if len(t.newline_pos) > max_lines or ink_width > avail * max_lines:
            return None
        cum_np = np.zeros(advance.size + 1, np.int64)  # (n + 1,)
        np.cumsum(advance, out=cum_np[1:])
        cum = cum_np.tolist()
        last_ink, breaks, breaks_last_ink = t.last_ink, t.breaks, t.breaks_last_ink
        # x end of the ink before each break: trailing spaces hang, so they do not count.
        breaks_ink_end = cum_np[t.breaks_ink_stop].tolist()  # non-decreasing
        newline_pos = t.newline_pos
        n = len(cum) - 1

        starts: list[int] = []
        ends: list[int] = []
        s = 0
        while s < n:
            k = bisect.bisect_left(newline_pos, s)
            para_end = newline_pos[k] if k < len(newline_pos) else n
            if s == para_end:  # blank line
                end, next_s = s, s + 1
            else:
                limit = cum[s] + avail
                j = last_ink[para_end - 1]
                if (cum[j + 1] if j >= s else cum[s]) <= limit:  # the paragraph's rest fits
                    end, next_s = para_end, para_end + 1
                else:
                    lo = bisect.bisect_right(breaks, s)
                    hi = bisect.bisect_left(breaks, para_end, lo)
                    first = bisect.bisect_left(breaks_last_ink, s, lo, hi)  # line holds ink
                    b = bisect.bisect_right(breaks_ink_end, limit, first, hi) - 1
                    if b >= first:  # last break whose ink fits
                        end = next_s = breaks[b]
                    else:  # the first word alone is too long: break it between characters
                        end = bisect.bisect_right(cum, limit, s + 1, para_end + 1) - 1
                        end = next_s = max(end, s + 1)
            starts.append(s)
            ends.append(end)
            if len(starts) > max_lines:
                return None
            s = next_s
        ascent, descent = table.ascent, table.descent
        baseline = ascent - (ascent + descent - line_height) // 2  # centre the font's box
        return _Layout(size, starts, ends, cum_np, line_height, baseline)

    def _placements(self, t: _Text, layout: _Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Drawn characters: (index, pen x, baseline y), each (n_drawn,) int64."""
        cfg = self.config
        drawn = np.flatnonzero(t.drawn)  # (n_drawn,)
        starts = np.asarray(layout.line_starts, np.int64)  # (n_lines,)
        line = np.searchsorted(starts, drawn, side="right") - 1  # (n_drawn,)
        x = cfg.margin + layout.cum[drawn] - layout.cum[starts[line]]
        y = cfg.margin + line * layout.line_height + layout.baseline
        return drawn, x, y

    # -- rasterisers -----------------------------------------------------------------------------

    def _rasterise_atlas(self, t: _Text, layout: _Layout) -> np.ndarray:
        cfg = self.config
        table = self._sizes[layout.font_size]
        drawn, x, y = self._placements(t, layout)
        glyph = t.slots[drawn]  # (n_drawn,)
        count = table.pix_count[glyph]  # (n_drawn,)
        total = int(count.sum())
        # Entries of every drawn glyph's pixels in the packed table, glyph after glyph.
        first = np.cumsum(count) - count  # (n_drawn,) where each glyph's pixels start in `entry`
        entry = np.arange(total) + np.repeat(table.pix_start[glyph] - first, count)  # (total,)
        # Pad the canvas by the farthest a pixel reaches from its pen, so no index wraps a row.
        pad = table.reach + 1
        width = cfg.page_width + 2 * pad
        canvas = np.zeros((cfg.page_height + 2 * pad) * width, np.uint8)  # flat (H_pad * W_pad,)
        origin = (y + pad) * width + (x + pad)  # (n_drawn,) flat pen position
        flat = np.repeat(origin, count) + table.flat_offsets(width)[entry]  # (total,)
        np.maximum.at(canvas, flat, table.pix_cov[entry])  # overlapping ink: the darker wins
        canvas = canvas.reshape(-1, width)[pad : pad + cfg.page_height, pad : pad + cfg.page_width]
        return np.subtract(255, canvas, dtype=np.uint8)  # (H, W) 255 = paper

    def _rasterise_pillow(self, t: _Text, layout: _Layout) -> np.ndarray:
        cfg = self.config
        table = self._sizes[layout.font_size]
        classes = self._chars.arrays()
        font_of = classes["font"][t.slots].tolist()  # (n,)
        safe = table.run_safe[t.slots].tolist()  # (n,)
        missing = classes["missing"][t.slots].tolist()  # (n,)
        cum = layout.cum.tolist()  # (n + 1,)
        img = Image.new("L", (cfg.page_width, cfg.page_height), 255)
        draw = ImageDraw.Draw(img)
        box_left, box_top, box_w, box_h = _box_geometry(
            layout.font_size, table.ascent, table.descent
        )
        for line, (s, e) in enumerate(zip(layout.line_starts, layout.line_ends, strict=True)):
            if s == e:
                continue
            y = cfg.margin + line * layout.line_height + layout.baseline
            x0 = cfg.margin - cum[s]
            i = s
            while i < e:
                font = font_of[i]
                if font == _NO_FONT:
                    if missing[i]:
                        bx, by = x0 + cum[i] + box_left, y + box_top
                        draw.rectangle((bx, by, bx + box_w - 1, by + box_h - 1), outline=0)
                    i += 1
                    continue
                # A run: same font, positions equal to Pillow's own pen advances.
                j = i + 1
                if safe[i]:
                    while j < e and font_of[j] == font and safe[j]:
                        j += 1
                draw.text(
                    (x0 + cum[i], y),
                    t.text[i:j],
                    fill=0,
                    font=table.atlas(font).font,
                    anchor="ls",
                )
                i = j
        return np.array(img, dtype=np.uint8)  # (H, W)


def _codepoints(text: str) -> np.ndarray:
    """(len(text),) uint32 code points; lone surrogates pass through (and render as missing)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def pages_to_tensor(pages: Sequence[RenderedPage]) -> torch.Tensor:
    """Pages -> float32 (N, H, W) in [-1, 1], paper = +1 and ink = -1."""
    if not pages:
        raise Vist2Error("pages_to_tensor needs at least one page")
    shapes = {p.image.shape for p in pages}
    if len(shapes) != 1:
        raise Vist2Error(f"pages_to_tensor needs pages of one size, got {sorted(shapes)}")
    stacked = torch.from_numpy(np.stack([p.image for p in pages]))  # (N, H, W) uint8
    return stacked.to(torch.float32).div_(127.5).sub_(1.0)
