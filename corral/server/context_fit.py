"""A runner whose context holds the prompt, for requests that leave ``num_ctx`` unset.

Agents send a system prompt and tool list of 10-30k tokens; cutting them to a 4096-token
default loses the instructions. The server has no tokenizer of its own (llama.cpp lives in
the runners), so the prompt is measured twice:

1. before a runner is held, **estimated** from the text's length (``estimate_chat`` and
   ``estimate_text``: 2.5 UTF-8 bytes a token, fewer than tokenizers average on English
   (about 4), code and JSON (about 3), so a prompt is rarely under-estimated; digits, one
   token each in some vocabularies, come close).
   This only sizes a *new* load (``Scheduler.acquire``'s ``need``), so a cold start with a
   long prompt loads once, with a context that holds it;
2. with the runner held, **counted** by its tokenizer (the chat path counts the whole
   prompt anyway, to fit it; generate counts only a prompt whose length could exceed the
   context). Where the count needs a longer context than the runner has and the scheduler
   would give one (``Scheduler.context_short``), the plan raises ``LargerContext`` before
   anything is sent; the route lets the runner go and asks again with the counted need,
   which reloads it (once: a second ask never raises).

The cost: nothing for a prompt whose byte length fits (no extra call); on the generate path,
one tokenize call of the whole prompt when its byte length could exceed the context (100 kB,
42780 SmolLM2 tokens: 125-265 ms on this machine's 2 busy cores, in-process); and, only when
the context grows, the reload (gemma3:270m: 3 s, its prompt read again from the start).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from corral.api.options import Options
from corral.scheduler import ContextNeed, LoadedModel, Scheduler, answer_room

__all__ = [
    "ContextSizing",
    "LargerContext",
    "context_flags",
    "estimate_chat",
    "estimate_text",
    "tokens_at_most",
]

logger = logging.getLogger(__name__)

#: tokens per UTF-8 byte assumed before a tokenizer has counted, as a fraction (one per
#: 2.5 bytes): English prose is about 4 bytes a token with these vocabularies, code and
#: JSON about 3, numbers (a token per digit in Gemma's) about 2.5; CJK 3 bytes, 1-2 tokens
_TOKENS_PER_BYTE = (2, 5)
#: what a chat template adds around each message (role markers, separators), in tokens
_TOKENS_PER_MESSAGE = 8


class LargerContext(Exception):
    """The held runner's context is too short for the counted prompt and the scheduler
    would load a longer one: let the runner go and acquire again with ``need``."""

    def __init__(self, need: ContextNeed, why: str) -> None:
        super().__init__(why)
        self.need = need
        self.why = why


def _utf8_length(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _tokens_for(size: int) -> int:
    """The estimated tokens of ``size`` UTF-8 bytes, rounded up."""
    tokens, per = _TOKENS_PER_BYTE
    return -(-size * tokens // per)


def tokens_at_most(text: str) -> int:
    """An upper bound of the tokens ``text`` makes: every token is at least one byte, and a
    tokenizer adds a BOS, an EOS and a leading space at most."""
    return _utf8_length(text) + 3


def estimate_text(text: str, options: Options, extra_tokens: int = 0) -> ContextNeed:
    """The estimated need of a prompt of ``text`` (plus ``extra_tokens`` already tokens, a
    generate ``context``) and room for the answer."""
    tokens = _tokens_for(_utf8_length(text)) + extra_tokens
    return ContextNeed(tokens, answer_room(options.num_predict))


def estimate_chat(
    messages: Sequence[dict[str, Any]], tools: list[dict[str, Any]] | None, options: Options
) -> ContextNeed:
    """The estimated need of a conversation as template messages (``Message.to_template``)
    with its tools, without rendering it."""
    size = 0
    for message in messages:
        size += _utf8_length(str(message.get("Content") or ""))
        size += _utf8_length(str(message.get("Thinking") or ""))
        calls = message.get("ToolCalls")
        if calls:
            size += _utf8_length(json.dumps(calls, ensure_ascii=False, default=str))
    if tools:
        size += _utf8_length(json.dumps(tools, ensure_ascii=False, default=str))
    tokens = _tokens_for(size) + _TOKENS_PER_MESSAGE * len(messages)
    return ContextNeed(tokens, answer_room(options.num_predict))


def context_flags(truncate: bool | None, shift: bool | None) -> dict[str, bool]:
    """A request's ``truncate`` and ``shift`` for the runner's completion request, sent
    only when false (the runner's default): ``truncate: false`` refuses a prompt over the
    context (400) instead of cutting it, ``shift: false`` ends the answer at a full context
    (``length``) instead of shifting it, and refuses a prompt over the context too."""
    flags: dict[str, bool] = {}
    if truncate is False:
        flags["truncate"] = False
    if shift is False:
        flags["shift"] = False
    return flags


class ContextSizing:
    """One request's context sizing: the estimate it acquires with first, and the check
    of its counted prompt against the runner it holds."""

    def __init__(self, scheduler: Scheduler, options: Options, estimate: ContextNeed) -> None:
        self.scheduler = scheduler
        self.options = options
        self.estimate = estimate
        self._may_grow = True

    def could_exceed(self, ref: LoadedModel, bound: int) -> bool:
        """Whether a prompt of at most ``bound`` tokens could need a longer context than
        ``ref`` has (else counting it is wasted): the scheduler's answer for the bound."""
        if not self._may_grow:
            return False
        need = ContextNeed(bound, self.estimate.answer_tokens, counted=True)
        return bool(self.scheduler.context_short(ref, self.options, need))

    def check(self, ref: LoadedModel, prompt_tokens: int) -> None:
        """Raise ``LargerContext`` when the counted prompt needs a longer context than
        ``ref`` has and the scheduler would load one; once per request at most."""
        if not self._may_grow:
            return
        need = ContextNeed(prompt_tokens, self.estimate.answer_tokens, counted=True)
        why = self.scheduler.context_short(ref, self.options, need)
        if why:
            self._may_grow = False
            logger.info(
                "reloading %s with a longer context: %s",
                ref.spec.name,
                why,
                extra={"model": ref.spec.name},
            )
            raise LargerContext(need, why)
