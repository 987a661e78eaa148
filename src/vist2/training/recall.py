"""Recall samples for the OLM stage (`TrainConfig.olm_recall_fraction`).

A fact with a five-digit key ("The door code is 48213.") is put somewhere on the pages of a span,
and its question and answer ("What is the door code? The door code is" + " 48213.") come later,
at the span's end or at the start of the chunk after the question's page. In the OLM layout the answer's chunk sees earlier chunks only as pages, so its key can
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
    """`filler` with a fact inserted on one of its pages, then its question and answer, the same
    length as `filler`; None when `filler` is too short to put the fact on a page (the caller
    keeps the plain span then, so short spans lower the fraction of recall samples a little).

    Half the time (drawn from `rng`) the question ends a page and the answer begins the next
    chunk, as when a prompt's last chunk is compressed (`vist2 eval needle`: the question is on a
    page, and the model writes after it); then more filler follows. Otherwise the answer ends the
    sample in the question's chunk. Either way the fact lies on pages before the chunk of the
    answer's first token, so only a page carries it there, and on one page (one chunk of
    `chunk_tokens`) when it fits in one."""
    fact, question = rng.choice(FACTS)
    key = f"{rng.randrange(100_000):05d}"
    fact_ids = encode(" " + fact.format(key=key) + " ")
    ask_ids = encode(" " + question)
    answer_ids = encode(" " + key + ".")
    length = len(filler)
    if rng.random() < 0.5:  # the answer begins a chunk
        answer_start = (length - len(answer_ids)) // chunk_tokens * chunk_tokens
    else:  # the answer ends the sample
        answer_start = length - len(answer_ids)
    room = answer_start - len(fact_ids) - len(ask_ids)
    last_offset = answer_start // chunk_tokens * chunk_tokens - len(fact_ids)
    fits = len(fact_ids) <= chunk_tokens
    offsets = [
        at
        for at in range(min(last_offset, room) + 1)
        if not fits or at // chunk_tokens == (at + len(fact_ids) - 1) // chunk_tokens
    ]
    if room < 0 or not offsets:
        return None
    text = list(filler[:room])
    after = list(filler[room : room + length - answer_start - len(answer_ids)])
    at = rng.choice(offsets)
    return text[:at] + fact_ids + text[at:] + ask_ids + answer_ids + after
