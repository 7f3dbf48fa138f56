"""Vocabularies from Hugging Face tokenizer files, as llama.cpp's GGUF keys want them.

WordPiece (BERT): llama.cpp marks a word start with U+2581 instead of marking continuations
with ``##``, so ``play ##ing`` becomes ``▁play ing``; bracketed specials stay as they are.
Byte-level BPE (Llama 3 style ``tokenizer.json``): tokens and merges are copied as is.
Token types: special added tokens are CONTROL, other added tokens USER_DEFINED, the rest
NORMAL; ids the files do not name become ``[PAD<id>]`` UNUSED so ids stay dense.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from corral.errors import BadRequestError

__all__ = ["Vocab", "bpe_vocab", "special_token_id", "wordpiece_vocab"]

_WORD_START = "\u2581"


@dataclass(frozen=True, slots=True)
class Vocab:
    tokens: list[str]
    types: list[int]
    ids: dict[str, int]
    merges: list[str]


def _added(tokenizer_json: dict[str, Any]) -> dict[int, tuple[str, bool]]:
    added: dict[int, tuple[str, bool]] = {}
    for entry in tokenizer_json.get("added_tokens") or ():
        if isinstance(entry, dict) and isinstance(entry.get("id"), int):
            added[entry["id"]] = (str(entry.get("content", "")), bool(entry.get("special")))
    return added


def _dense(
    by_id: dict[int, str], added: dict[int, tuple[str, bool]], size: int
) -> tuple[list[str], list[int]]:
    tokens: list[str] = []
    types: list[int] = []
    for index in range(size):
        if index in added:
            content, special = added[index]
            tokens.append(by_id.get(index, content))
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        elif index in by_id:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
    return tokens, [int(t) for t in types]


def wordpiece_vocab(folder: Path, tokenizer_json: dict[str, Any], size: int) -> Vocab:
    """The BERT vocabulary from ``vocab.txt`` (or ``tokenizer.json``'s WordPiece model)."""
    by_id: dict[int, str] = {}
    vocab_txt = folder / "vocab.txt"
    model = tokenizer_json.get("model") or {}
    if vocab_txt.is_file():
        lines = vocab_txt.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        by_id = dict(enumerate(lines))
    elif model.get("type") == "WordPiece" and isinstance(model.get("vocab"), dict):
        by_id = {int(i): str(t) for t, i in model["vocab"].items()}
    else:
        raise BadRequestError("a BERT checkpoint needs vocab.txt or a WordPiece tokenizer.json")
    size = max(size, max(by_id) + 1)
    ids = {token: index for index, token in by_id.items()}
    tokens, types = _dense(by_id, _added(tokenizer_json), size)
    return Vocab([_phantom(t) for t in tokens], types, ids, [])


def _phantom(token: str) -> str:
    if token.startswith("[") and token.endswith("]"):
        return token
    if token.startswith("##"):
        return token[2:]
    return _WORD_START + token


def bpe_vocab(tokenizer_json: dict[str, Any], size: int) -> Vocab:
    """A byte-level BPE vocabulary and its merges from ``tokenizer.json``."""
    model = tokenizer_json.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise BadRequestError("this checkpoint needs a byte-level BPE tokenizer.json")
    if model.get("byte_fallback"):
        raise BadRequestError(
            "SentencePiece-style (byte_fallback) tokenizers are not supported by the converter"
        )
    by_id = {int(i): str(t) for t, i in model["vocab"].items()}
    added = _added(tokenizer_json)
    for index, (content, _special) in added.items():
        by_id.setdefault(index, content)
    size = max(size, max(by_id) + 1)
    tokens, types = _dense(by_id, added, size)
    merges = []
    for merge in model.get("merges") or ():
        merges.append(merge if isinstance(merge, str) else " ".join(str(m) for m in merge))
    return Vocab(tokens, types, {t: i for i, t in by_id.items()}, merges)


def special_token_id(value: Any, ids: dict[str, int]) -> int | None:
    """The id of a special token given as ``tokenizer_config.json`` gives it."""
    if isinstance(value, dict):
        value = value.get("content")
    if isinstance(value, str):
        return ids.get(value)
    return None
