"""How a model's details are laid out: ``corral show MODEL`` and ``/show info`` print the
same summary from the same ``/api/show`` answer."""

from __future__ import annotations

from typing import Any

from corral.cli import _output as output

__all__ = ["show_summary"]


def show_summary(data: dict[str, Any]) -> None:
    """Ollama's sections (model, capabilities, parameters, license head); a row whose value
    the server did not send is left out rather than printed empty."""
    details = data.get("details", {})
    info = data.get("model_info", {})
    arch = info.get("general.architecture", details.get("family", ""))
    output.out("  Model")
    rows = [
        ("architecture", arch),
        ("parameters", details.get("parameter_size", "")),
        ("context length", info.get(f"{arch}.context_length", "")),
        ("embedding length", info.get(f"{arch}.embedding_length", "")),
        ("quantization", details.get("quantization_level", "")),
    ]
    for key, value in rows:
        if value not in ("", None):
            output.out(f"    {key:<20}{value}")
    if data.get("capabilities"):
        output.out("\n  Capabilities")
        for capability in data["capabilities"]:
            output.out(f"    {capability}")
    if data.get("parameters"):
        output.out("\n  Parameters")
        for line in data["parameters"].splitlines():
            key, _, value = line.partition(" ")
            output.out(f"    {key:<20}{value.strip()}")
    if data.get("license"):
        output.out("\n  License")
        for line in data["license"].splitlines()[:2]:
            output.out(f"    {line}")
    output.out()
