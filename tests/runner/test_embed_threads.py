"""The embedding context's threads: fewer while other processes keep the CPUs busy."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from corral.runner.embed import _FreeCores


def test_threads_follow_the_free_cores() -> None:
    free = _FreeCores([0, 1])
    assert free.threads(2) == 2
    free.others = 0.3
    assert free.threads(2) == 2
    free.others = 0.7
    assert free.threads(2) == 1
    free.others = 5.0
    assert free.threads(2) == 1  # never none
    free.others = 2.2
    assert free.threads(8) == 6


@pytest.mark.skipif(
    _FreeCores.of_this_process() is None, reason="needs Linux /proc and two CPUs or more"
)
def test_a_busy_process_counts_as_taken() -> None:
    free = _FreeCores.of_this_process()
    assert free is not None
    cpu = free.cpus[0]
    spinner = subprocess.Popen(
        [sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"]
    )
    try:
        time.sleep(0.3)
        for _ in range(3):  # three readings while this process itself idles
            free.begin()
            time.sleep(0.25)
            free.end()
        assert free.others > 0.6
        assert free.threads(len(free.cpus)) <= len(free.cpus) - 1
    finally:
        spinner.kill()
        spinner.wait()


def test_no_estimate_for_a_single_cpu() -> None:
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("Linux only")
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        assert _FreeCores.of_this_process() is None
    finally:
        os.sched_setaffinity(0, before)
