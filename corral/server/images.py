"""Images in generation requests: checked here, placed in the prompt, sent to the runner.

Every dialect ends up with base64 strings (``images`` on Ollama's messages and generate,
data URLs' payloads from OpenAI's ``image_url``, Anthropic's ``image`` blocks and the
Responses API's ``input_image``). Before a runner is held, each one is decoded and its header
read: the format must be one the runner decodes (JPEG, PNG, WebP) and its size bounded, so a
bad picture is a 400 that names it and never reaches llama.cpp. Pixels are decoded in the
runner (``corral/runner/vision.py``), which answers a 400 for a truncated or corrupt file.

Where images go in the prompt is Ollama's rule: ``[img-N] `` before a message's text for
each of its images (N counts every image of the request), or in place of ``[img]``
placeholders the text already has. The runner turns each ``[img-N]`` into the image's
embeddings.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from typing import Any

from corral.errors import BadRequestError

__all__ = [
    "MAX_IMAGE_PIXELS",
    "check_images",
    "generate_image_messages",
    "image_size",
    "mark_chat_images",
    "mark_prompt",
    "referenced_images",
]

#: the largest picture accepted (width x height); bigger ones are refused, not resized
MAX_IMAGE_PIXELS = 50_000_000
_BASE64 = re.compile(rb"[A-Za-z0-9+/=\s]*")
_MARKER = re.compile(r"\[img-(\d+)\]")


def check_images(images: list[str] | None) -> None:
    """Each image decodes from base64 and is a JPEG, PNG or WebP of a bounded size; else a
    400 (Ollama's messages where it has one)."""
    for index, text in enumerate(images or ()):
        data = _decode(text)
        size = image_size(data)
        if size is None:
            raise BadRequestError(f"image {index}: unsupported image format")
        width, height = size
        if width <= 0 or height <= 0:
            raise BadRequestError(f"image {index}: the picture has no pixels ({width}x{height})")
        if width * height > MAX_IMAGE_PIXELS:
            raise BadRequestError(
                f"image {index}: the picture is too large ({width}x{height},"
                f" {width * height / 1e6:.0f} megapixels; at most"
                f" {MAX_IMAGE_PIXELS / 1e6:.0f}): scale it down"
            )


def _decode(text: str) -> bytes:
    raw = text.encode("ascii", errors="replace")
    good = _BASE64.match(raw)
    end = good.end() if good else 0
    if end < len(raw):
        raise BadRequestError(f"illegal base64 data at input byte {end}")
    try:
        return base64.b64decode(raw, validate=False)
    except (binascii.Error, ValueError):
        raise BadRequestError(f"illegal base64 data at input byte {len(raw.rstrip())}") from None


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a JPEG, PNG or WebP header, or None if it is none of them."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) < 24 or data[12:16] != b"IHDR":
            return 0, 0
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data.startswith(b"\xff\xd8\xff"):
        return _jpeg_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """The size in the first start-of-frame segment; (0, 0) when there is none."""
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            offset += 1
            continue
        marker = data[offset + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            offset += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if offset + 9 > len(data):
                return 0, 0
            height, width = struct.unpack(">HH", data[offset + 5 : offset + 9])
            return int(width), int(height)
        offset += 2 + length
    return 0, 0


def _webp_size(data: bytes) -> tuple[int, int]:
    kind = data[12:16]
    if kind == b"VP8X" and len(data) >= 30:
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return width, height
    if kind == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return int(width) & 0x3FFF, int(height) & 0x3FFF
    if kind == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return 0, 0


def mark_prompt(text: str, first: int, count: int) -> str:
    """``text`` with images ``first`` .. ``first + count - 1`` placed, as Ollama's
    ``chatPrompt``: in its ``[img]`` placeholders, the others' tags before it (then one
    space), the whole trimmed."""
    prefix = ""
    for number in range(first, first + count):
        tag = f"[img-{number}]"
        if "[img]" in text:
            text = text.replace("[img]", tag, 1)
        else:
            prefix += tag
    return f"{prefix} {text}".strip()


def generate_image_messages(count: int) -> list[dict[str, Any]]:
    """A generate request's images, as Ollama's ``GenerateHandler`` renders them: a user
    message ``[img-N]`` each, before the prompt's (the template merges them with it)."""
    return [{"role": "user", "content": f"[img-{number}]"} for number in range(count)]


def mark_chat_images(messages: list[dict[str, Any]]) -> list[str]:
    """Put each message's images in its content (template dicts, ``.Content``); every image
    of the conversation in order."""
    images: list[str] = []
    for message in messages:
        attached = list(message.get("Images") or [])
        if attached:
            message["Content"] = mark_prompt(message.get("Content", ""), len(images), len(attached))
            images.extend(attached)
    return images


def referenced_images(prompt: str, images: list[str]) -> list[str]:
    """``images`` if the rendered ``prompt`` still places one of them (older turns may have
    been dropped to fit the context), else none."""
    if any(int(number) < len(images) for number in _MARKER.findall(prompt)):
        return images
    return []
