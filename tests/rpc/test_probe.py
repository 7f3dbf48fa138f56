"""The worker probe: each outcome from a worker that behaves that way, within its timeout."""

from __future__ import annotations

import time

import pytest

from corral.rpc.endpoints import parse_endpoint, parse_endpoints
from corral.rpc.probe import ProbeState, probe, report
from tests.rpc.fake_worker import closed_port, fake_worker

GiB = 1 << 30


def test_an_answering_worker_reports_its_devices_and_memory() -> None:
    with fake_worker(devices=(3 * GiB, 1 * GiB)) as endpoint:
        result = probe(endpoint, timeout=2)
    assert result.state is ProbeState.OK
    assert result.version == "7.0.0"
    assert result.free_bytes == (3 * GiB, 1 * GiB)
    assert result.total_bytes == (6 * GiB, 2 * GiB)
    assert "2 devices, 4.0 GiB free of 8.0 GiB" in result.describe()


def test_nothing_listening_is_unreachable_at_once() -> None:
    started = time.monotonic()
    result = probe(closed_port(), timeout=2)
    assert result.state is ProbeState.UNREACHABLE
    assert "refused" in result.detail.lower()
    assert time.monotonic() - started < 1


def test_a_worker_held_by_another_client_is_busy_within_the_timeout() -> None:
    with fake_worker(mode="silent") as endpoint:
        started = time.monotonic()
        result = probe(endpoint, timeout=0.5)
    assert result.state is ProbeState.BUSY
    assert "one at a time" in result.detail
    assert 0.4 < time.monotonic() - started < 1.5


@pytest.mark.parametrize("version", [(6, 0, 0), (7, 1, 0), (8, 0, 0)])
def test_another_protocol_version_is_incompatible(version: tuple[int, int, int]) -> None:
    with fake_worker(version=version) as endpoint:
        result = probe(endpoint, timeout=2)
    assert result.state is ProbeState.INCOMPATIBLE
    assert ".".join(map(str, version)) in result.detail
    assert "same corral" in result.detail


@pytest.mark.parametrize("mode", ["close", "garbage"])
def test_something_else_on_the_port_is_incompatible(mode: str) -> None:
    with fake_worker(mode=mode) as endpoint:
        result = probe(endpoint, timeout=2)
    assert result.state is ProbeState.INCOMPATIBLE


def test_report_lists_every_entry_bad_ones_included() -> None:
    with fake_worker() as good:
        rows = report((good, "host:99999", closed_port()), timeout=1)
    states = [row["state"] for row in rows]
    assert states == ["ok", "unreachable", "invalid"]
    assert "port must be 1-65535" in str(rows[2]["detail"])


def test_endpoints_parse_with_the_default_port() -> None:
    assert parse_endpoint("10.0.0.2") == ("10.0.0.2", 50052)
    assert parse_endpoint(" worker-1:6000 ") == ("worker-1", 6000)
    assert parse_endpoints("a:1, b ,a:1,,c:3") == ("a:1", "b:50052", "c:3")


@pytest.mark.parametrize("text", ["", ":5", "h:0", "h:x", "h:70000", "[::1]:5", "fe80::1", "a b"])
def test_bad_endpoints_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_endpoint(text)
