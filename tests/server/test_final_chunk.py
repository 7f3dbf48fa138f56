"""The stop string that ended an answer travels on the relay's final chunk, readable by a
dialect that has a field for it and invisible to every writer of Ollama's chunks."""

from __future__ import annotations

import json

from starlette.responses import JSONResponse

from corral.runner.events import CompletionEvent
from corral.server.generation import merge_chat
from corral.server.relay import FinalChunk, stop_sequence_of
from tests.server.test_relay import DONE, Script, _relay


async def final_of(done: CompletionEvent) -> dict[str, object]:
    chunks = [chunk async for chunk in _relay(Script({"content": "hi"}, done))]
    return chunks[-1]


async def test_the_final_chunk_carries_the_stop_string_off_the_wire() -> None:
    final = await final_of({**DONE, "done_reason": "stop", "stop_sequence": "END"})
    assert isinstance(final, FinalChunk)
    assert stop_sequence_of(final) == "END"
    assert "stop_sequence" not in final
    assert "stop_sequence" not in json.loads(json.dumps(final))
    assert b"END" not in JSONResponse(final).body
    assert "stop_sequence" not in merge_chat([{"message": {"content": "hi"}}, final])


async def test_no_stop_string_and_plain_chunks_have_none() -> None:
    assert stop_sequence_of(await final_of(DONE)) is None
    assert stop_sequence_of({"done": True, "stop_sequence": "END"}) is None  # a plain field
