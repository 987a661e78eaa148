"""The three layout rules of DESIGN.md on hand-written cases, and against a brute-force reference."""

import torch

from vist2.chunker import Chunk
from vist2.layout import (
    IGNORE_INDEX,
    ChunkSegment,
    PageSegment,
    TextSegment,
    build_layout,
    collate_layouts,
    make_mask_mod,
    ocr_layout,
    olm_layout,
    sft_layout,
)

BETA = 2


def chunk(ids, compressed=True):
    return Chunk(tuple(ids), "", compressed)


def reference_visible(kinds, q, k):
    """Rule 2 read literally, one pair at a time. kinds[i] = ("text"|"transient"|"visual", chunk)."""
    if k > q:
        return False
    kind_k, chunk_k = kinds[k]
    kind_q, chunk_q = kinds[q]
    if kind_k != "transient":
        return True  # every token sees all persistent tokens before it
    return kind_q in ("transient", "visual") and chunk_q == chunk_k  # own chunk's text only


def kinds_of(segments):
    kinds, n_chunk = [], 0
    for seg in segments:
        if isinstance(seg, TextSegment):
            kinds += [("text", -1)] * len(seg.token_ids)
        elif isinstance(seg, ChunkSegment):
            kinds += [("transient", n_chunk)] * len(seg.token_ids) + [("visual", n_chunk)] * BETA
            n_chunk += 1
        else:
            kinds += [("visual", -1)] * BETA
    return kinds


def test_positions_rule1():
    segs = [TextSegment((1, 2, 3)), ChunkSegment((4, 5, 6, 7)), PageSegment(), TextSegment((8, 9))]
    lay = build_layout(segs, BETA)
    # text 0-2 | chunk text 3-6, its visual tokens reuse 3-4 | page 5-6 | tail 7-8
    assert lay.position_ids.tolist() == [0, 1, 2, 3, 4, 5, 6, 3, 4, 5, 6, 7, 8]
    assert lay.visual.tolist() == [False] * 7 + [True] * 4 + [False] * 2
    assert lay.persistent.tolist() == [True] * 3 + [False] * 4 + [True] * 6
    assert lay.num_pages == 2


def test_positions_run_continuously_over_what_stays():
    segs = [ChunkSegment(tuple(range(4))), ChunkSegment(tuple(range(4))), TextSegment((9,))]
    lay = build_layout(segs, BETA)
    kept = lay.position_ids[lay.persistent].tolist()
    assert kept == list(range(len(kept)))  # visual tokens + raw text: 0, 1, 2, ... without gaps


def test_visibility_rule2_cases():
    segs = [TextSegment((1,)), ChunkSegment((2, 3)), ChunkSegment((4, 5)), TextSegment((6,))]
    lay = build_layout(segs, BETA)
    m = lay.attention_mask()
    # slots: 0 raw | 1,2 text c0 | 3,4 vis c0 | 5,6 text c1 | 7,8 vis c1 | 9 raw
    assert m[2, 1] and m[2, 0]  # chunk text: own earlier text, persistent before
    assert m[4, 1] and m[4, 2] and m[4, 3]  # visual: own chunk's text and earlier own visual
    assert not m[5, 1] and not m[6, 2]  # later chunk's text: not an earlier chunk's text
    assert m[5, 3] and m[5, 4]  # ... but its visual tokens
    assert not m[7, 1] and m[7, 5] and m[7, 6]  # c1 visual: own text only
    assert not m[9, 1] and not m[9, 5] and m[9, 8] and m[9, 0]  # raw after chunks: persistent only
    assert not m[3, 4]  # causal


def test_visibility_matches_brute_force_reference():
    segs = [
        TextSegment((1, 2)),
        PageSegment(),
        TextSegment((3,)),
        ChunkSegment((4, 5, 6)),
        ChunkSegment((7, 8)),
        TextSegment((9, 10), train=True),
    ]
    lay = build_layout(segs, BETA)
    kinds = kinds_of(segs)
    mask = lay.attention_mask()
    expected = torch.tensor(
        [[reference_visible(kinds, q, k) for k in range(len(kinds))] for q in range(len(kinds))]
    )
    assert torch.equal(mask, expected)


def test_mask_mod_equals_dense_mask():
    layouts = [
        build_layout([TextSegment((1,)), ChunkSegment((2, 3, 4)), TextSegment((5,))], BETA),
        build_layout([PageSegment(), ChunkSegment((2, 3)), ChunkSegment((4, 5))], BETA),
    ]
    batch = collate_layouts(layouts)
    mod = make_mask_mod(batch["persistent"], batch["chunk_id"], batch["valid"])
    bsz, length = batch["input_ids"].shape
    b = torch.arange(bsz)[:, None, None]
    q = torch.arange(length)[None, :, None]
    k = torch.arange(length)[None, None, :]
    assert torch.equal(mod(b, 0, q, k), batch["attention_mask"][:, 0])


def test_labels_rule3_first_token_of_next_chunk_from_last_visual():
    segs = [
        ChunkSegment((10, 11, 12), train=True),
        ChunkSegment((13, 14, 15), train=True),
        TextSegment((16,), train=True),
    ]
    lay = build_layout(segs, BETA)
    labels = lay.labels.tolist()
    # slots: 0-2 text c0 | 3-4 vis c0 | 5-7 text c1 | 8-9 vis c1 | 10 raw
    assert labels[0:2] == [11, 12]
    assert labels[2] == IGNORE_INDEX  # last text of a chunk predicts nothing: its page comes next
    assert (
        labels[3] == IGNORE_INDEX and labels[4] == 13
    )  # last visual token predicts chunk 1's first
    assert labels[9] == 16
    assert labels[10] == IGNORE_INDEX


def test_olm_layout_last_chunk_shorter_than_k_stays_text():
    chunks = [chunk(range(4)), chunk(range(4)), chunk((7,), compressed=False)]
    lay = build_layout(olm_layout(chunks), BETA)
    assert lay.num_pages == 2
    assert lay.visual.tolist()[-1] is False
    assert lay.labels.tolist()[-2] == 7  # the last visual token of chunk 2 predicts the short tail
    n_labels = int((lay.labels != IGNORE_INDEX).sum())
    assert n_labels == 3 + 3 + 1 + 1  # within-chunk next tokens + cross-chunk first tokens


def test_sft_layout_query_tail_raw_and_response_loss_only():
    prefix, middle = (100, 101), (102, 103)
    # query: one full chunk (a page) + a tail of 2 <= β tokens that stays raw
    query = [chunk((1, 2, 3, 4)), chunk((5, 6), compressed=False)]
    response = [chunk((20, 21, 22, 23)), chunk((24, 99))]  # 99 = end of turn
    lay = build_layout(sft_layout(prefix, query, middle, response), BETA)
    ids = lay.input_ids.tolist()
    # slots: prefix 0-1 | query page 2-3 | tail 4-5 | middle 6-7 | resp c0 8-11, vis 12-13 | 14-15
    assert lay.visual.tolist()[2:4] == [True, True] and ids[4:6] == [5, 6]
    assert lay.persistent[4:6].all()  # the raw query tail is persistent
    labelled = [(j, t) for j, t in enumerate(lay.labels.tolist()) if t != IGNORE_INDEX]
    targets = [t for _, t in labelled]
    assert targets == [20, 21, 22, 23, 24, 99]  # only response tokens carry loss
    assert labelled[0][0] == 7  # first response token predicted from the template's last token
    assert lay.position_ids.tolist()[8:] == [8, 9, 10, 11, 8, 9, 10, 11]


def test_sft_layout_page_only_query():
    query = [chunk((1, 2, 3, 4)), chunk((5, 6, 7, 8)), chunk((9, 10, 11))]  # tail 3 > β: a page
    lay = build_layout(sft_layout((100,), query, (101,), [chunk((20, 99))]), BETA)
    assert lay.num_pages == 3
    assert int(lay.visual.sum()) == 3 * BETA
    assert not any(t in lay.input_ids.tolist() for t in range(1, 12))  # query never fed as tokens
    assert lay.position_ids.tolist() == list(range(1 + 3 * BETA + 1 + 2))


def test_ocr_and_caption_layouts_are_plain_causal():
    lay = build_layout(ocr_layout([(1, 2), (3, 4, 5)]), BETA)
    n = len(lay)
    assert torch.equal(lay.attention_mask(), torch.tril(torch.ones(n, n, dtype=torch.bool)))
    assert lay.position_ids.tolist() == list(range(n))
    assert [t for t in lay.labels.tolist() if t != IGNORE_INDEX] == [1, 2, 3, 4, 5]


def test_collate_pads_right_and_hides_padding():
    a = build_layout([TextSegment((1, 2, 3), train=True)], BETA)
    b = build_layout([TextSegment((4,), train=True)], BETA)
    batch = collate_layouts([a, b], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["labels"][1].tolist() == [IGNORE_INDEX] * 3
    mask = batch["attention_mask"][1, 0]
    assert not mask[0, 1:].any()  # the valid row sees no padded key
    assert torch.equal(mask[1:, 1:], torch.eye(2, dtype=torch.bool))  # padded rows: themselves only
    assert mask.any(dim=-1).all()  # and no row is empty (no NaN from softmax)
    left = collate_layouts([a, b], pad_id=0, padding_side="left")
    assert left["input_ids"].tolist() == [[1, 2, 3], [0, 0, 4]]
    assert left["attention_mask"][1, 0].any(dim=-1).all()
    assert not left["attention_mask"][1, 0, 2, :2].any()
