"""OCR scores and perplexity: definitions checked on hand-made cases."""

import math

import pytest

from vist2.eval.metrics import (
    character_accuracy,
    correct_prefix,
    inline_diff,
    mean_scores,
    perplexity,
    rouge_l,
    rouge_units,
    score_page,
    token_accuracy,
)


def test_identical_text_scores_one():
    score = score_page("Call me Ishmael.", "Call me Ishmael.", [1, 2, 3], [1, 2, 3])
    assert score.character_accuracy == 1.0 and score.token_accuracy == 1.0
    assert score.rouge_l == 1.0 and score.exact


def test_a_page_is_scored_on_what_it_shows():
    # "\r\n" and "\n", a tab and four spaces are drawn alike: reading either is right
    score = score_page("Call me\r\nIshmael.\tYes", "Call me\nIshmael.    Yes", [1, 2], [1, 3])
    assert score.character_accuracy == 1.0 and score.exact and score.rouge_l == 1.0
    assert score.token_accuracy == 0.5  # the ids still differ
    wrong = score_page("Call me\nIshmael.", "Call me Ishmael.", [1], [1])
    assert wrong.character_accuracy < 1.0 and not wrong.exact  # a newline is not a space


def test_character_accuracy_is_one_minus_cer_floored():
    assert character_accuracy("abcd", "abcx") == pytest.approx(0.75)
    assert character_accuracy("ab", "xyzwvu") == 0.0  # CER > 1 floors at 0
    assert character_accuracy("", "") == 1.0


def test_token_accuracy_counts_same_index_matches():
    assert token_accuracy([1, 2, 3, 4], [1, 9, 3]) == pytest.approx(0.5)


def test_correct_prefix_counts_tokens_before_the_first_mistake():
    # the match after the mistake is not counted
    assert correct_prefix([1, 2, 3, 4], [1, 2, 9, 4]) == 2
    assert correct_prefix([1, 2], [1, 2]) == 2
    assert correct_prefix([1, 2], [7, 2]) == 0
    assert score_page("ab", "ab", [5, 6, 7], [5, 6, 8]).correct_prefix == 2


def test_mean_scores_average_the_correct_prefix():
    scores = [score_page("a", "a", [1, 2], [1, 2]), score_page("a", "b", [1, 2], [3, 2])]
    assert mean_scores(scores)["correct_prefix_tokens"] == pytest.approx(1.0)


def test_rouge_units_split_words_and_cjk_characters():
    assert rouge_units("Call me, Ishmael.") == ["Call", "me", ",", "Ishmael", "."]
    assert rouge_units("满纸荒唐言，ok") == ["满", "纸", "荒", "唐", "言", "，", "ok"]


def test_rouge_l_is_lcs_f1():
    # LCS of [a b c d] and [a c d e] is [a c d]: recall 3/4, precision 3/4.
    assert rouge_l("a b c d", "a c d e") == pytest.approx(0.75)
    assert rouge_l("满纸荒唐言", "满纸荒唐") == pytest.approx(2 * 1 * 0.8 / 1.8)
    assert rouge_l("abc", "xyz") == 0.0


def test_mean_scores_average_pages():
    scores = [score_page("ab", "ab", [1], [1]), score_page("ab", "xy", [1], [2])]
    means = mean_scores(scores)
    assert means["pages"] == 2 and means["exact_page_rate"] == 0.5
    assert means["character_accuracy"] == pytest.approx(0.5)


def test_inline_diff_marks_missing_and_extra():
    assert inline_diff("the cat sat", "the bat sat") == "the [-c-]{+b+}at sat"
    assert inline_diff("same", "same") == "same"


def test_perplexity():
    assert perplexity(0.0, 10) == 1.0
    assert perplexity(10 * math.log(5), 10) == pytest.approx(5.0)
    assert math.isnan(perplexity(0.0, 0))
