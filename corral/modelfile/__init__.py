"""Modelfile: parse the text a user writes, write it back, and turn it into a create request.

Pure synchronous code with no I/O: the server and the CLI both use it (the CLI to find the
local files it must upload first, the server for the old ``modelfile`` request field).
"""

from __future__ import annotations

from corral.modelfile.parser import (
    COMMANDS,
    MESSAGE_ROLES,
    Command,
    Modelfile,
    decode_modelfile,
    format_modelfile,
    parse_modelfile,
    quote,
)
from corral.modelfile.request import CreateFields, to_create_fields

__all__ = [
    "COMMANDS",
    "MESSAGE_ROLES",
    "Command",
    "CreateFields",
    "Modelfile",
    "decode_modelfile",
    "format_modelfile",
    "parse_modelfile",
    "quote",
    "to_create_fields",
]
