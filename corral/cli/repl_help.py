"""The help of the interactive session: ``/?`` and its topics, and the usage that a bare
``/set``, ``/set parameter`` or ``/show`` prints. All of it goes to stderr."""

from __future__ import annotations

from corral.cli import _output as output

__all__ = ["usage", "usage_parameters", "usage_set", "usage_shortcuts", "usage_show"]


def _lines(*lines: str) -> None:
    for line in lines:
        output.err(line)


def usage() -> None:
    _lines(
        "Commands:",
        "  /set            Change a setting of this session (/? set)",
        "  /show           Describe the model (/? show)",
        "  /load <model>   Switch to another model or saved session",
        "  /list           List the models here",
        "  /save <model>   Keep this session as a new model",
        "  /clear          Forget the conversation so far",
        "  /bye            Leave (also /exit, or Ctrl + d)",
        "  /?, /help       This help; /? set, /? show, /? shortcuts for more",
        "",
        'Start a line with """ to write a message over several lines; end it with """.',
        "",
    )


def usage_set() -> None:
    _lines(
        "Settings:",
        "  /set parameter NAME VALUE   Sampling or model parameter (/set parameter for a list)",
        '  /set system TEXT            System message (""" for several lines)',
        "  /set template TEXT          Prompt template, kept by /save",
        "  /set history | nohistory    Keep typed lines in ~/.ollama/history, or not",
        "  /set wordwrap | nowordwrap  Wrap answers at the terminal width, or not",
        "  /set format json | noformat Answer in JSON, or freely",
        "  /set verbose | quiet        Print timings after each answer, or not",
        "  /set think [LEVEL] | nothink  Let a thinking model think (high, medium, low), or not",
        "",
    )


def usage_show() -> None:
    _lines(
        "Model details:",
        "  /show info         Architecture, size, capabilities",
        "  /show license      License text",
        "  /show modelfile    Modelfile, with this session's changes",
        "  /show parameters   Parameters of the model and of this session",
        "  /show system       System message",
        "  /show template     Prompt template",
        "",
    )


def usage_shortcuts() -> None:
    _lines(
        "Keys:",
        "  Ctrl + a / Ctrl + e   Start / end of the line",
        "  Alt + b / Alt + f     One word left / right",
        "  Ctrl + k / Ctrl + u   Delete to the end / the start of the line",
        "  Ctrl + w              Delete the word before the cursor",
        "  Up / Down             Earlier / later lines (history)",
        "  Ctrl + l              Clear the screen",
        "  Ctrl + c              Clear the line; stop an answer while it streams",
        "  Ctrl + d              Leave (on an empty line)",
        "",
    )


def usage_parameters() -> None:
    rows = [
        ("temperature FLOAT", "Randomness; 0 always picks the likeliest token"),
        ("seed INT", "Random seed, for answers that repeat"),
        ("num_predict INT", "Most tokens in an answer (-1: no limit)"),
        ("num_ctx INT", "Context window in tokens"),
        ("top_k INT", "Sample from the k likeliest tokens"),
        ("top_p FLOAT", "Sample from the likeliest tokens summing to p"),
        ("min_p FLOAT", "Drop tokens below min_p x the likeliest one"),
        ("repeat_penalty FLOAT", "Penalty for repeating recent tokens"),
        ("repeat_last_n INT", "How many recent tokens count as repeats"),
        ("num_gpu INT", "Layers to put on the GPU"),
        ("stop TEXT TEXT ...", "Stop the answer at any of these texts"),
    ]
    _lines(
        "Parameters (the Modelfile's PARAMETER names; these are the common ones):",
        *(f"  /set parameter {usage:<22} {what}" for usage, what in rows),
        "",
    )
