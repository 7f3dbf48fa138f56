"""Image paths in ``corral run`` prompts, as ``ollama run`` picks them up.

For a model with the ``vision`` capability, a prompt such as ``what is in ./photo.png?``
attaches the picture: every path that starts with ``/``, ``./``, ``\\`` or a drive letter
and ends in ``.jpg``, ``.jpeg``, ``.png`` or ``.webp`` (spaces escaped as ``\\ `` or
``%20``, or the path in quotes) and names an existing file is read, sent base64 in the
message's ``images`` and taken out of the text; the session says which images it attached.
A path that does not exist stays text (it may be just words); one that exists but is not a
picture, or is too large, is an error that names it.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from corral.cli import _output as output
from corral.cli.client import CliError, ServerClient

__all__ = ["MAX_IMAGE_BYTES", "extract_images", "model_sees_images", "user_message"]

#: the largest picture file attached (Ollama's limit)
MAX_IMAGE_BYTES = 100 * 1024 * 1024
_PATH = re.compile(r"(?:[a-zA-Z]:)?(?:\./|/|\\)[\S\\ ]+?\.(?i:jpg|jpeg|png|webp)\b")


def model_sees_images(client: ServerClient, model: str) -> bool:
    """Whether ``model`` has the ``vision`` capability (False if it cannot be shown)."""
    try:
        shown = client.request("POST", "/api/show", {"model": model})
    except CliError:
        return False
    return isinstance(shown, dict) and "vision" in shown.get("capabilities", ())


def extract_images(text: str) -> tuple[str, list[Path]]:
    """The prompt without the picture paths it names, and those pictures' paths."""
    found: list[Path] = []
    for match in _PATH.findall(text):
        path = Path(match.replace("\\ ", " ").replace("%20", " "))
        if not path.is_file():
            continue
        found.append(path)
        for written in (f"'{match}'", f'"{match}"', match):
            text = text.replace(written, "")
    return text.strip(), found


def user_message(text: str, *, vision: bool) -> dict[str, Any]:
    """The user turn for ``text``: with the pictures it names when the model sees images."""
    if not vision:
        return {"role": "user", "content": text}
    text, paths = extract_images(text)
    images = [_read_image(path) for path in paths]
    for path in paths:
        output.err(f"Added image '{path}'")
    message: dict[str, Any] = {"role": "user", "content": text}
    if images:
        message["images"] = images
    return message


def _read_image(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise CliError(f"{path}: file size exceeds maximum limit (100MB)")
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror}") from None
    if not (
        data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"))
        or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
    ):
        raise CliError(f"{path}: invalid image type (JPEG, PNG and WebP are supported)")
    return base64.b64encode(data).decode("ascii")
