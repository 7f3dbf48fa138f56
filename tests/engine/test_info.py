"""``corral info`` reports the engine: its build, backends, instruction sets and self-test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from corral.engine import record


def _info(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", "info", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_info_json_has_the_engine() -> None:
    engine = json.loads(_info("--json").stdout)["engine"]
    assert engine["ok"] is True, engine
    assert engine["llama_cpp_python"]
    assert "CPU" in engine["backends"]
    assert engine["cpu_features"]
    built = record.load()
    if built is not None:
        assert engine["build"]["tier"] == built["tier"]
        assert engine["selftest"] == record.selftest_summary(built)


def test_info_table_names_the_engine() -> None:
    out = _info().stdout
    assert "Engine: llama.cpp from llama-cpp-python" in out
    assert "instruction sets:" in out
    assert "self-test:" in out


def test_a_stale_record_is_not_believed(tmp_path: Path) -> None:
    path = tmp_path / "engine.json"
    path.write_text(json.dumps({"tier": "native", "library_sha256": "0" * 64}))
    done = subprocess.run(
        [sys.executable, "-c", "from corral.engine import record; print(record.load())"],
        capture_output=True,
        text=True,
        env={**os.environ, "CORRAL_ENGINE_RECORD": str(path)},
        check=True,
    )
    assert done.stdout.strip() == "None"
