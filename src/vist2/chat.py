"""Chat-template pieces around a query, so the query can be compressed on its own.

The tokenizer's chat template renders a whole conversation; VIST2 needs the template tokens
*around* the user's text as raw text and the text itself as pages. We render the template once
with a placeholder and cut at it.
"""

from __future__ import annotations

from vist2.errors import Vist2Error

_PLACEHOLDER = "\u2063VIST2-QUERY\u2063"


def chat_parts(tokenizer, **template_kwargs) -> tuple[list[int], list[int]]:
    """(prefix_ids, middle_ids): template tokens before the user's text and after it, up to and
    including the assistant header (the generation prompt)."""
    if not getattr(tokenizer, "chat_template", None):
        raise Vist2Error(
            "the tokenizer has no chat template; drop --chat or use a tokenizer that has one"
        )
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": _PLACEHOLDER}],
        tokenize=False,
        add_generation_prompt=True,
        **template_kwargs,
    )
    if text.count(_PLACEHOLDER) != 1:
        raise Vist2Error("the chat template does not place the user's text exactly once")
    before, after = text.split(_PLACEHOLDER)
    encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    return encode(before), encode(after)
