"""A create's draft model (Modelfile ``DRAFT``, ``draft_files``, ``draft_quantize``).

A model may carry a second GGUF, stored as a layer of media type
``application/vnd.ollama.image.draft`` (newest Ollama's), that its runner uses to guess
tokens for speculative decoding (``corral/runner/speculative.py``). The draft must speak the
model's vocabulary: its guesses are token ids the model checks. So a create compares the
two tokenizers (kind, token count, and a hash of the token list and token types) and
refuses a mismatch with a 400 before the first byte.

Where a draft comes from, in the order a create looks:

- ``draft_files``: ``{filename: digest}`` of one uploaded GGUF (what Ollama's client sends
  for ``DRAFT ./file.gguf``);
- ``DRAFT <value>`` in a Modelfile, or corral's ``draft`` field: a blob (``sha256:...``, a
  blob path as ``show --modelfile`` prints), a server-side GGUF path (loopback clients
  only, as ``FROM``), or the name of a model in the store (a bundled one is imported), whose
  weights become the draft;
- otherwise the base model's own draft, when ``FROM`` names a model that has one.

``draft_quantize`` (``create --draft-quantize``) quantizes an F16/BF16/F32 draft, as Ollama;
a draft already quantized is refused rather than quantized twice.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from corral.errors import BadRequestError, GGUFError, InvalidNameError
from corral.gguf import read_gguf
from corral.store import MEDIA_TYPE_DRAFT, Layer, ModelStore, Name
from corral.store.quantize import QUANTIZABLE_FROM, normalize_quant_type

__all__ = ["DraftSource", "check_draft_quantizable", "check_same_vocabulary"]

#: the tokenizer keys that must agree between a model and its draft
_TOKENIZER_KIND = "tokenizer.ggml.model"
_TOKENS = "tokenizer.ggml.tokens"
_TOKEN_TYPES = "tokenizer.ggml.token_type"


class DraftSource:
    """How a create names its draft's source, resolved against one store."""

    def __init__(
        self,
        store: ModelStore,
        *,
        blob_reference: Callable[[str], str | None],
        check_server_path: Callable[[str, str], None],
        model_digest: Callable[[Name], str],
        parse_name: Callable[[str], Name],
    ) -> None:
        self._store = store
        self._blob_reference = blob_reference
        self._check_server_path = check_server_path
        self._model_digest = model_digest
        self._parse_name = parse_name

    def from_files(self, files: dict[str, str], digest_of: Callable[[str], str]) -> Layer:
        """``draft_files``: exactly one GGUF, already uploaded."""
        if not files:
            raise BadRequestError("no files provided for the draft model")
        ggufs = [f for f in files if f.lower().endswith(".gguf")] or list(files)
        if len(ggufs) != 1:
            raise BadRequestError("a draft model must be one GGUF file")
        return self._blob_layer(digest_of(files[ggufs[0]]))

    def from_reference(self, raw: str) -> Layer:
        """``DRAFT <value>``: a blob, a server-side GGUF file, or a model's weights."""
        source = raw.strip()
        if not source:
            raise BadRequestError("DRAFT needs a model name or a GGUF file")
        digest = self._blob_reference(source)
        if digest is not None:
            return self._blob_layer(digest)
        if source.startswith(("/", "./", "../", "~")) or source.lower().endswith(".gguf"):
            path = Path(os.path.expanduser(source))
            if not path.is_absolute():
                raise BadRequestError(
                    f"invalid draft reference: {source} (a relative path means nothing to the"
                    " server: upload the file with POST /api/blobs and name it in"
                    " 'draft_files')"
                )
            self._check_server_path("draft", source)
            if not path.is_file():
                raise BadRequestError(f"invalid draft reference: {source} (no such file)")
            _read_draft(path)
            info = self._store.import_file(path)
            return Layer(MEDIA_TYPE_DRAFT, info.digest, info.size)
        try:
            name = self._parse_name(source)
        except InvalidNameError:
            raise BadRequestError(f"invalid draft reference: {source}") from None
        return self._blob_layer(self._model_digest(name))

    def _blob_layer(self, digest: str) -> Layer:
        path = self._store.blob_path(digest)
        if not path.is_file():
            raise BadRequestError(
                f'blob "{digest}" not found: upload it with POST /api/blobs/{digest} first'
            )
        _read_draft(path)
        return Layer(MEDIA_TYPE_DRAFT, digest, path.stat().st_size)


def check_same_vocabulary(model_path: Path, draft_path: Path) -> None:
    """400 unless the draft's tokenizer is the model's: same kind, count and tokens."""
    model = _vocabulary(model_path, "model")
    draft = _vocabulary(draft_path, "draft model")
    if model == draft:
        return
    if model[0] != draft[0]:
        reason = f"tokenizer '{draft[0]}' is not the model's '{model[0]}'"
    elif model[1] != draft[1]:
        reason = f"vocabulary of {draft[1]} tokens is not the model's {model[1]}"
    else:
        reason = "tokens differ from the model's"
    raise BadRequestError(
        f"draft model does not share the model's vocabulary: its {reason}"
        " (a draft must use the same tokenizer)"
    )


def check_draft_quantizable(draft_path: Path, quantize: str) -> str:
    """The quantization type for ``draft_quantize``; 400 for a draft already quantized."""
    wanted = normalize_quant_type(quantize)
    file_type = read_gguf(draft_path).file_type.upper()
    if file_type not in QUANTIZABLE_FROM and file_type != wanted:
        raise BadRequestError(
            f"draft quantization requires an unquantized draft model, got {file_type}"
        )
    return wanted


def _vocabulary(path: Path, what: str) -> tuple[str, int, str]:
    try:
        metadata = read_gguf(path, full_arrays=True).metadata
    except GGUFError as exc:
        raise BadRequestError(f"{what} was not in GGUF format: {exc.message}") from exc
    tokens = metadata.get(_TOKENS)
    if not isinstance(tokens, list) or not tokens:
        raise BadRequestError(f"{what} has no vocabulary (no {_TOKENS})")
    digest = hashlib.sha256()
    for token in tokens:
        digest.update(str(token).encode("utf-8", errors="surrogatepass") + b"\x00")
    types = metadata.get(_TOKEN_TYPES)
    if isinstance(types, list):
        digest.update(b"\x01" + ",".join(str(t) for t in types).encode())
    return str(metadata.get(_TOKENIZER_KIND, "")), len(tokens), digest.hexdigest()


def _read_draft(path: Path) -> None:
    try:
        read_gguf(path)
    except GGUFError as exc:
        raise BadRequestError(f"draft model was not in GGUF format: {exc.message}") from exc
    except OSError as exc:
        raise BadRequestError(f"cannot read {path}: {exc.strerror}") from exc
