"""Pages are legible: an off-the-shelf OCR engine (RapidOCR, PP-OCR models) reads them back.

Slow (a few seconds per page); skipped where rapidocr-onnxruntime is not installed (it is in the
dev extras).
"""

import difflib

import numpy as np
import pytest

from vist2.bench.render import longest_prefix_that_fits, read_sample
from vist2.render import PageRenderer, RenderConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ocr():
    rapidocr = pytest.importorskip("rapidocr_onnxruntime")
    return rapidocr.RapidOCR()


def read_back(ocr, image: np.ndarray, text: str) -> float:
    """Fraction of the page's non-space characters the OCR engine returns, in order."""
    result, _ = ocr(np.stack([image] * 3, axis=-1))  # (H, W, 3) uint8
    got = "".join("".join(r[1] for r in result or []).split())
    ref = "".join(text.split())
    blocks = difflib.SequenceMatcher(None, ref, got, autojunk=False).get_matching_blocks()
    return sum(b.size for b in blocks) / len(ref)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_default_pages_are_read_back_by_ocr(ocr, lang):
    try:
        text = read_sample(lang, 6000)
    except FileNotFoundError as err:  # the corpora live in ../shared
        pytest.skip(f"corpus missing: {err}")
    text = longest_prefix_that_fits(text, RenderConfig(overflow="error"))  # a full 10 px page
    scores = {}
    for backend in ("atlas", "pillow"):
        page = PageRenderer(RenderConfig(backend=backend)).render(text)
        scores[backend] = read_back(ocr, page.image, text)
    # measured: en 89 % (atlas) / 91 % (pillow), zh 86 % / 86 % at 10 px, 512 px pages
    assert scores["atlas"] > 0.8 and scores["pillow"] > 0.8, scores
    assert abs(scores["atlas"] - scores["pillow"]) < 0.05, scores
