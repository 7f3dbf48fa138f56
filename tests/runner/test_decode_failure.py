"""A decode llama.cpp refuses fails the requests whose tokens were in it, and only those:
the other streams go on, and the failed slot serves the next request."""

from __future__ import annotations

from typing import Any

import pytest

from tests.runner.engine_harness import Result, chat, started_engine


@pytest.mark.model
def test_a_refused_decode_fails_only_its_own_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    import llama_cpp

    from corral.runner.engine import Task

    with started_engine(num_ctx=512, num_parallel=2) as engine:
        options = {"temperature": 0, "num_predict": 60}
        streaming = Result()
        engine.submit(
            Task(
                tokens=engine.tokenize(chat("Tell me a story.")),
                options=options,
                emit=streaming.emit,
            )
        )
        assert streaming.first.wait(60)
        (busy,) = [s.seq_id for s in engine._slots if s.task is not None]

        real = llama_cpp.llama_decode
        refused: list[int] = []

        def decode(ctx: Any, batch: Any) -> int:
            seqs = {batch.seq_id[i][0] for i in range(batch.n_tokens)}
            if not refused and busy not in seqs:  # the new request's own small decode
                refused.append(batch.n_tokens)
                return 1  # llama.cpp: no room in the KV cache for this batch
            return int(real(ctx, batch))

        monkeypatch.setattr(llama_cpp, "llama_decode", decode)
        failed = Result()
        # no prefix shared with the streaming request, so its tokens cannot come from there
        engine.submit(
            Task(tokens=engine.tokenize("Hello, my name is"), options=options, emit=failed.emit)
        )
        assert failed.wait(60).final == {"error": "llama_decode failed with status 1"}
        assert refused == [1]

        final = streaming.wait(120).final
        assert final.get("done_reason") == "length", final
        assert final.get("eval_count") == 60, final

        again = Result()
        engine.submit(
            Task(tokens=engine.tokenize("Hello, my name is"), options=options, emit=again.emit)
        )
        assert again.wait(60).final.get("done") is True, again.final
        assert again.text
