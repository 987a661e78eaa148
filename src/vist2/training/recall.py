"""Recall samples for the OLM stage (`TrainConfig.olm_recall_fraction`).

A fact with a five-digit key ("The door code is 48213.") is put somewhere on the pages of a span,
and the span ends with its question and answer ("What is the door code? The door code is" +
" 48213."). In the OLM layout the answer's chunk sees earlier chunks only as pages, so its key can
be predicted only by reading it back from the page that holds the fact: the skill that
`vist2 eval needle` tests. The facts here are not the needle's sentence ("The pass key is ..."),
so the needle test measures transfer to a new sentence, not a memorised one.
"""

import random
from collections.abc import Callable, Sequence

FACTS: tuple[tuple[str, str], ...] = (
    # (fact, question): the question ends where the key is to be written
    ("The door code is {key}.", "What is the door code? The door code is"),
    ("My locker number is {key}. Keep it in mind.", "What is my locker number? It is"),
    ("The secret number is {key}. Do not forget it.", "What is the secret number? It is"),
    ("Write down the account number {key}.", "What is the account number? The account number is"),
    ("Her room number was {key}.", "What was her room number? Her room number was"),
    ("The ticket number is {key}; remember {key}.", "What is the ticket number? The ticket is"),
)


def recall_ids(
    filler: Sequence[int],
    encode: Callable[[str], list[int]],
    chunk_tokens: int,
    rng: random.Random,
) -> list[int] | None:
    """`filler` (at most as many tokens as the sample may hold) with a fact inserted on one of its
    pages and its question and answer appended, cut to the same length; None when the span is too
    short to put the fact on a page before the answer's chunk.

    The fact goes at a random token offset that ends before the chunk (of `chunk_tokens`) holding
    the answer's first token, so only a page carries it there."""
    fact, question = rng.choice(FACTS)
    key = f"{rng.randrange(100_000):05d}"
    fact_ids = encode(" " + fact.format(key=key) + " ")
    ask_ids = encode(" " + question)
    answer_ids = encode(" " + key + ".")
    room = len(filler) - len(fact_ids) - len(ask_ids) - len(answer_ids)
    if room < 0:
        return None
    text = list(filler[:room])
    answer_start = len(text) + len(fact_ids) + len(ask_ids)
    last_offset = (answer_start // chunk_tokens) * chunk_tokens - len(fact_ids)
    if last_offset < 0:
        return None
    at = rng.randint(0, min(last_offset, len(text)))
    return text[:at] + fact_ids + text[at:] + ask_ids + answer_ids
