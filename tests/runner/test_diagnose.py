"""How a runner's end is put into words."""

from __future__ import annotations

import signal
from pathlib import Path

from corral.runner.diagnose import ENGINE_UNUSABLE, OomCounter, explain, oom_kills


def test_sigill_names_the_cause_and_the_fix() -> None:
    text = explain(-signal.SIGILL, [], oom_killed=False)
    assert text.startswith("killed by signal 4 (SIGILL): ")
    assert "instructions this CPU cannot run" in text
    assert "./install.sh --rebuild-engine" in text


def test_sigkill_names_memory_only_when_the_oom_killer_ran() -> None:
    assert explain(-signal.SIGKILL, ["x"], oom_killed=False) == "killed by signal 9 (SIGKILL)"
    text = explain(-signal.SIGKILL, [], oom_killed=True)
    assert text.startswith("killed by signal 9 (SIGKILL): ")
    assert "out-of-memory killer" in text
    assert "num_ctx" in text


def test_crashes_carry_the_last_log_lines() -> None:
    tail = [
        "llama_context: n_ctx = 4096\n",
        "\n",
        "/src/llama-context.cpp:1234: GGML_ASSERT(n_outputs_max <= cparams.n_outputs_max)\n",
    ]
    for sig in (signal.SIGABRT, signal.SIGSEGV):
        text = explain(-sig, tail, oom_killed=False)
        assert text.startswith(f"killed by signal {int(sig)} ({sig.name}): llama.cpp crashed")
        assert "GGML_ASSERT(n_outputs_max <= cparams.n_outputs_max)" in text
        assert "n_ctx = 4096" not in text  # the assert is what tells
    plain = ["llama_context: n_ctx = 4096\n", "llama_context: flash_attn = 0\n"]
    assert explain(-signal.SIGSEGV, plain, oom_killed=False).endswith(
        "its last log lines: llama_context: n_ctx = 4096 | llama_context: flash_attn = 0"
    )
    gdb_noise = [*tail, "6434\tPython/ceval.c: No such file or directory.\n"]
    assert "ceval" not in explain(-signal.SIGABRT, gdb_noise, oom_killed=False)
    assert explain(-signal.SIGSEGV, [], oom_killed=False).endswith("llama.cpp crashed")


def test_an_unusable_engine_says_why() -> None:
    tail = ["error: the engine (llama.cpp) was built for instructions this CPU cannot run\n"]
    assert explain(ENGINE_UNUSABLE, tail, oom_killed=False) == (
        "exit status 78: the engine (llama.cpp) was built for instructions this CPU cannot run"
    )


def test_plain_exits() -> None:
    assert explain(1, ["error: boom"], oom_killed=False) == "exit status 1"
    assert explain(None, [], oom_killed=False) == "still running"
    assert explain(-signal.SIGTERM, [], oom_killed=True) == "killed by signal 15 (SIGTERM)"


def test_oom_counter_reads_vmstat(tmp_path: Path) -> None:
    vmstat = tmp_path / "vmstat"
    vmstat.write_text("nr_free_pages 100\noom_kill 3\n")
    assert oom_kills(vmstat) == 3
    counter = OomCounter(vmstat)
    assert not counter.fired()
    vmstat.write_text("nr_free_pages 100\noom_kill 4\n")
    assert counter.fired()
    assert oom_kills(tmp_path / "missing") is None
    assert not OomCounter(tmp_path / "missing").fired()
    assert oom_kills(Path("/proc/vmstat")) is not None  # this kernel counts them
