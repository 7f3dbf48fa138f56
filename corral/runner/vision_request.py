"""The ``images`` of a runner's ``/completion`` request: checked, decoded and tokenized.

``images`` is a list of base64 strings (the server has already checked them, but the runner
trusts no caller); the prompt carries Ollama's ``[img-N]`` markers. Tokenizing decodes and
preprocesses every picture, so it runs in a worker thread, never in the event loop or the
engine thread; any problem is a 400 that names the image, before the answer starts.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

from corral.runner.vision import ImageError, Vision, VisionPrompt

__all__ = ["MAX_IMAGES", "vision_prompt"]

#: images in one request (each is encoded in full before the answer starts)
MAX_IMAGES = 32


async def vision_prompt(vision: Vision | None, payload: dict[str, Any]) -> VisionPrompt | None:
    """The request's prompt cut into text and images, or None when it has no images."""
    from corral.runner.server import HTTPError  # the server imports this module

    images = payload.get("images")
    if not images:
        return None
    if vision is None:
        raise HTTPError(400, "this model does not support images (no projector loaded)")
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise HTTPError(400, "images must be a list of base64 strings")
    if len(images) > MAX_IMAGES:
        raise HTTPError(400, f"too many images: {len(images)} (at most {MAX_IMAGES})")
    prompt = payload.get("prompt", "")
    if not isinstance(prompt, str):
        raise HTTPError(400, "prompt must be a string")
    pictures: list[bytes] = []
    for index, text in enumerate(images):
        try:
            pictures.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise HTTPError(400, f"image {index}: invalid base64 data: {exc}") from None
    try:
        return await asyncio.to_thread(vision.tokenize, prompt, pictures)
    except ImageError as exc:
        raise HTTPError(400, str(exc)) from None
