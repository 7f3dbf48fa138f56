"""The CLI's pieces for newest Ollama's flags: the vector printed as Go writes float32s,
metadata cut as ``ollama show -v``, ``--truncate=false`` and ``--think`` words, ``/list``."""

from __future__ import annotations

import pytest

from corral.cli.embed_run import format_vector
from corral.cli.main import _bare_think, print_model_list
from corral.cli.show import _metadata_text, show_summary


def test_vector_as_go_json() -> None:
    assert format_vector([0.012345678918063641, -0.5, 0.0, 1e-7, 3.0]) == (
        "[0.012345679,-0.5,0,1e-7,3]"
    )


def test_metadata_arrays_cut_to_about_ten_columns() -> None:
    assert _metadata_text(["a", "b", "c"]) == "[a b c]"
    assert _metadata_text(list(range(100))) == "[0 1 2 3 4 ...+95 more]"
    assert _metadata_text(True) == "true"
    assert _metadata_text(0.5) == "0.5"


def test_argv_words() -> None:
    assert _bare_think(["run", "m", "--truncate=false", "--think", "hi"]) == [
        "run",
        "m",
        "--no-truncate",
        "--think=true",
        "hi",
    ]
    assert _bare_think(["run", "--", "--think"]) == ["run", "--", "--think"]


def test_list_filters_by_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    models = {
        "models": [
            {"name": n, "digest": "0" * 64, "size": 1, "modified_at": "2026-01-01T00:00:00Z"}
            for n in ("smollm2:135m", "gemma3:270m", "SmolCopy:latest")
        ]
    }
    print_model_list(models, "smol")
    out = capsys.readouterr().out
    assert "smollm2:135m" in out and "SmolCopy:latest" in out and "gemma3" not in out


def test_show_verbose_prints_metadata_and_tensors(capsys: pytest.CaptureFixture[str]) -> None:
    data = {
        "details": {"family": "llama"},
        "model_info": {"general.architecture": "llama", "tokenizer.ggml.tokens": ["a"] * 9},
        "tensors": [{"name": "token_embd.weight", "type": "Q4_1", "shape": [576, 49152]}],
        "requires": "0.14.0",
    }
    show_summary(data)
    plain = capsys.readouterr().out
    assert "Tensors" not in plain and "Metadata" not in plain and "0.14.0" in plain
    show_summary(data, verbose=True)
    verbose = capsys.readouterr().out
    assert "Metadata" in verbose and "[a a a a a ...+4 more]" in verbose
    assert "token_embd.weight" in verbose and "Q4_1" in verbose and "[576 49152]" in verbose
