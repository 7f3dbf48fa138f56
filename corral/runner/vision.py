"""Images in a runner: llama.cpp's multimodal library (``mtmd``) on the engine's context.

A vision model is a language GGUF plus a projector GGUF (``general.architecture = "clip"``).
``Vision.load`` opens the projector against the loaded model; a prompt with image markers
(``[img-N]``, N indexing the request's images, as Ollama's prompts carry them) is cut by
``mtmd_tokenize`` into text chunks and image chunks (``Vision.tokenize``, run by the HTTP side
of the runner: a bad picture is a 400 before anything streams, and decoding a large JPEG does
not hold up the decode loop).

The engine sees an ordinary token list in which each image occupies as many entries as it
has image tokens, all equal to one negative *placeholder id* derived from the image's
SHA-256. So the prefix cache works unchanged: a follow-up turn that repeats the picture has
the same placeholders at the same place, its cached prefix covers the image, and the image
is neither encoded nor decoded again. When a slot's next prompt entry is a placeholder the
engine calls ``Vision.evaluate``: the projector encodes the image and its embeddings are
decoded into that slot's sequence (``seq_id``) at the slot's position, in a decode of their
own, between two steps of the batched loop (other slots wait for that one encode; its cost is
measured in ``bench/bench_vision.py``).

Refused clearly: M-RoPE models (Qwen2-VL and later: their positions are not one per token, so
the engine's bookkeeping of one cell per position does not hold) and projectors without a
vision encoder (audio only). Non-causal image attention (Gemma 3) is handled by mtmd's helper,
which switches the mask for the image's own decode only.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import llama_cpp as llama

mtmd: Any
try:  # libmtmd ships with llama-cpp-python; a build without it serves text models only
    from llama_cpp import mtmd_cpp as mtmd
except (ImportError, OSError):
    mtmd = None

__all__ = [
    "ImageError",
    "Vision",
    "VisionError",
    "VisionPrompt",
    "image_run_start",
    "is_placeholder",
    "text_run",
]

logger = logging.getLogger(__name__)

#: the marker mtmd splits the prompt on; no template or user text contains it by accident
_MARKER = "<corral:image:5f1e>"
#: Ollama's image marker in a rendered prompt: ``[img-N]``
_OLLAMA_MARKER = re.compile(r"\[img-(\d+)\]")
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"


class VisionError(RuntimeError):
    """The projector cannot be used with this model (load time)."""


class ImageError(ValueError):
    """A request's image cannot be used: the message says which one and why (a 400)."""


@dataclass(slots=True)
class VisionPrompt:
    """A prompt cut into tokens and image chunks: what one task evaluates.

    ``tokens`` has one placeholder id per image token where an image goes; ``images`` maps the
    index of an image's first entry to its chunk. The chunks live in ``_chunks`` (mtmd's list)
    until ``close``, which the runner calls once the engine has let go of the task.
    """

    tokens: list[int]
    images: dict[int, Any] = field(default_factory=dict)
    sizes: dict[int, int] = field(default_factory=dict)
    _chunks: Any = None

    @property
    def image_tokens(self) -> int:
        return sum(self.sizes.values())

    def close(self) -> None:
        if self._chunks is not None:
            mtmd.mtmd_input_chunks_free(self._chunks)
            self._chunks = None
            self.images = {}


def is_placeholder(token: int) -> bool:
    return token < 0


def text_run(tokens: list[int]) -> int:
    """How many of ``tokens`` come before the first image placeholder."""
    for index, token in enumerate(tokens):
        if token < 0:
            return index
    return len(tokens)


def image_run_start(prompt: VisionPrompt, position: int) -> int:
    """``position``, or the start of the image it falls inside: a cached prefix may end only
    between chunks, never in the middle of an image's embeddings."""
    for start, size in prompt.sizes.items():
        if start < position < start + size:
            return start
    return position


class Vision:
    """The projector of one loaded model. ``evaluate`` runs only in the engine thread;
    ``tokenize`` in any one thread at a time besides it (it reads the projector's settings
    and preprocesses pictures, it does not touch the compute graph)."""

    def __init__(self, handle: Any) -> None:
        self._ctx = handle

    @classmethod
    def load(cls, path: str, model: Any, *, threads: int, use_gpu: bool) -> Vision:
        if mtmd is None:
            raise VisionError("this llama.cpp build has no multimodal library (libmtmd)")
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.n_threads = threads
        params.print_timings = False
        params.warmup = False
        params.media_marker = _MARKER.encode()
        handle = mtmd.mtmd_init_from_file(path.encode(), model, params)
        if not handle:
            raise VisionError(f"failed to load projector '{path}'")
        vision = cls(handle)
        if not mtmd.mtmd_support_vision(handle):
            vision.close()
            raise VisionError(f"projector '{path}' has no vision encoder")
        if mtmd.mtmd_decode_use_mrope(handle):
            vision.close()
            raise VisionError(
                "this vision model uses M-RoPE positions (Qwen2-VL family), which this"
                " runner does not support yet"
            )
        return vision

    def close(self) -> None:
        if self._ctx is not None:
            mtmd.mtmd_free(self._ctx)
            self._ctx = None

    # ---- prompts -------------------------------------------------------------------------

    def tokenize(self, prompt: str, images: list[bytes]) -> VisionPrompt:
        """Cut ``prompt`` at its ``[img-N]`` markers; a prompt without markers gets every
        image before its text (raw prompts, as llama.cpp's CLI does). ``ImageError`` names a
        picture that cannot be decoded."""
        text, order = _place_markers(prompt, len(images))
        bitmaps = [self._bitmap(images[index], index) for index in order]
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            data = text.encode("utf-8")
            text_input = mtmd.mtmd_input_text(data, len(data), True, True)
            array = (mtmd.mtmd_bitmap_p_ctypes * max(len(bitmaps), 1))(*bitmaps)
            status = mtmd.mtmd_tokenize(
                self._ctx, chunks, ctypes.byref(text_input), array, len(bitmaps)
            )
            if status != 0:
                raise ImageError(
                    f"could not prepare the images of the prompt (mtmd status {status})"
                )
            result = _flatten(chunks)
        except BaseException:
            mtmd.mtmd_input_chunks_free(chunks)
            raise
        finally:
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)
        result._chunks = chunks
        return result

    def _bitmap(self, data: bytes, index: int) -> Any:
        """A decoded picture; only PNG and JPEG reach llama.cpp's decoder (anything else
        would be tried as audio or video), WebP goes through Pillow where it is installed."""
        if data.startswith((_PNG, _JPEG)):
            buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
            bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(self._ctx, buffer, len(data), False)
            if not bitmap:
                raise ImageError(f"image {index}: the picture could not be decoded (truncated?)")
            mtmd.mtmd_bitmap_set_id(bitmap, hashlib.sha256(data).hexdigest().encode())
            return bitmap
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_bitmap(data, index)
        raise ImageError(f"image {index}: unsupported image format")

    # ---- evaluation (engine thread) -----------------------------------------------------

    def evaluate(
        self,
        chunk: Any,
        lctx: Any,
        *,
        n_past: int,
        seq_id: int,
        n_batch: int,
        guard: Callable[[], Any],
    ) -> int:
        """Encode ``chunk`` and decode its embeddings into ``seq_id`` from ``n_past``; the
        positions it took. ``guard`` is the CPU turn held around each of the two steps."""
        with guard():
            status = mtmd.mtmd_encode_chunk(self._ctx, chunk)
        if status != 0:
            raise RuntimeError(f"image encoding failed with status {status}")
        embeddings = mtmd.mtmd_get_output_embd(self._ctx)
        new_n_past = llama.llama_pos(n_past)
        with guard():
            status = mtmd.mtmd_helper_decode_image_chunk(
                self._ctx,
                lctx,
                chunk,
                embeddings,
                n_past,
                seq_id,
                n_batch,
                ctypes.byref(new_n_past),
                mtmd.mtmd_helper_post_decode_callback(),
                None,
            )
        if status != 0:
            raise RuntimeError(f"image decoding failed with status {status}")
        return int(new_n_past.value) - n_past


def _place_markers(prompt: str, count: int) -> tuple[str, list[int]]:
    """The prompt with mtmd's marker where each ``[img-N]`` was, and the image index of each
    marker in order. Markers naming no image stay text; images no marker names are unused,
    unless the prompt has no marker at all."""
    order: list[int] = []

    def replace(match: re.Match[str]) -> str:
        index = int(match.group(1))
        if index >= count:
            return match.group(0)
        order.append(index)
        return _MARKER

    text = _OLLAMA_MARKER.sub(replace, prompt)
    if not order and count:
        order = list(range(count))
        text = _MARKER * count + text
    return text, order


def _flatten(chunks: Any) -> VisionPrompt:
    tokens: list[int] = []
    prompt = VisionPrompt(tokens)
    for i in range(mtmd.mtmd_input_chunks_size(chunks)):
        chunk = mtmd.mtmd_input_chunks_get(chunks, i)
        kind = mtmd.mtmd_input_chunk_get_type(chunk)
        if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
            count = ctypes.c_size_t(0)
            pointer = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
            tokens.extend(pointer[i] for i in range(count.value))
            continue
        if kind != mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
            raise ImageError("only images are supported, not audio")
        size = int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))
        identity = (mtmd.mtmd_input_chunk_get_id(chunk) or b"").decode()
        prompt.images[len(tokens)] = chunk
        prompt.sizes[len(tokens)] = size
        tokens.extend([_placeholder(identity)] * size)
    if tokens and tokens[-1] < 0:
        raise ImageError("the prompt must not end with an image: add text after it")
    return prompt


def _placeholder(identity: str) -> int:
    """A negative id for the image with this hash: equal pictures, equal placeholders."""
    digest = hashlib.sha256(identity.encode()).digest()
    return -1 - int.from_bytes(digest[:4], "little") % (1 << 30)


def _webp_bitmap(data: bytes, index: int) -> Any:
    try:  # optional: llama.cpp's own decoder has no WebP
        image_module: Any = importlib.import_module("PIL.Image")
    except ImportError:
        raise ImageError(
            f"image {index}: WebP pictures need Pillow in the runner's environment"
            " (pip install pillow); PNG and JPEG work without it"
        ) from None
    try:
        with image_module.open(io.BytesIO(data)) as picture:
            rgb = picture.convert("RGB")
    except Exception as exc:
        raise ImageError(f"image {index}: the picture could not be decoded: {exc}") from exc
    width, height = rgb.size
    raw = rgb.tobytes()
    buffer = (ctypes.c_uint8 * len(raw)).from_buffer_copy(raw)
    bitmap = mtmd.mtmd_bitmap_init(width, height, buffer)
    identity = hashlib.sha256(data).hexdigest().encode()
    mtmd.mtmd_bitmap_set_id(bitmap, identity)
    return bitmap
