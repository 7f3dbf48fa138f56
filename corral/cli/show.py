"""How a model's details are laid out: ``corral show MODEL`` and ``/show info`` print the
same summary from the same ``/api/show`` answer."""

from __future__ import annotations

from typing import Any

from corral.cli import _output as output

__all__ = ["show_summary"]


def show_summary(data: dict[str, Any], *, verbose: bool = False) -> None:
    """Ollama's sections (model, capabilities, parameters, license head; with ``verbose``
    also every metadata key and every tensor, as ``ollama show -v``); a row whose value
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
        ("requires", data.get("requires", "")),
    ]
    for key, value in rows:
        if value not in ("", None):
            output.out(f"    {key:<20}{value}")
    _projector(data.get("projector_info") or {})
    if data.get("capabilities"):
        output.out("\n  Capabilities")
        for capability in data["capabilities"]:
            output.out(f"    {capability}")
    if data.get("parameters"):
        output.out("\n  Parameters")
        for line in data["parameters"].splitlines():
            key, _, value = line.partition(" ")
            output.out(f"    {key:<20}{value.strip()}")
    if verbose and info:
        output.out("\n  Metadata")
        for key in sorted(info):
            output.out(f"    {key:<40}{_metadata_text(info[key])}")
    if verbose and data.get("tensors"):
        output.out("\n  Tensors")
        for tensor in data["tensors"]:
            shape = "[" + " ".join(str(d) for d in tensor.get("shape", [])) + "]"
            output.out(f"    {tensor.get('name', ''):<40}{tensor.get('type', ''):<8}{shape}")
    if data.get("license"):
        output.out("\n  License")
        for line in data["license"].splitlines()[:2]:
            output.out(f"    {line}")
    output.out()


def _projector(info: dict[str, Any]) -> None:
    """A vision model's projector section, as ``ollama show`` prints it."""
    if not info:
        return
    count = info.get("general.parameter_count")
    rows = [
        ("architecture", info.get("general.architecture", "")),
        ("parameters", _human_count(count) if isinstance(count, int) else ""),
        ("embedding length", info.get("clip.vision.embedding_length", "")),
        ("dimensions", info.get("clip.vision.projection_dim", "")),
    ]
    output.out("\n  Projector")
    for key, value in rows:
        if value not in ("", None):
            output.out(f"    {key:<20}{value}")


def _human_count(count: int) -> str:
    for size, unit in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if count >= size:
            return f"{count / size:.2f}{unit}"
    return str(count)


def _metadata_text(value: Any) -> str:
    """A metadata value as ``ollama show -v`` prints it: a long array cut to the items that
    fit about ten columns, then ``...+N more]``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if not isinstance(value, list):
        return str(value)
    shown: list[str] = []
    width = 1
    for item in value:
        text = str(item)
        extra = len(text) + (1 if shown else 0)
        if shown and width + extra > 10:
            break
        shown.append(text)
        width += extra
    if len(shown) < len(value):
        return "[" + " ".join(shown) + f" ...+{len(value) - len(shown)} more]"
    return "[" + " ".join(shown) + "]"
