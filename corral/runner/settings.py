"""What a runner is loaded with: one record from the request to the engine.

``LoadSettings`` carries Ollama's load-time option names (``num_ctx`` is per slot) and what
the placement decided (``num_gpu_layers``, ``gpu_ids``, ``tensor_split``). Its path:

- the scheduler builds it from a request's ``Options`` (``Scheduler.load_settings``), the
  one place where values are clamped and ``num_ctx`` is capped at the training length;
- the estimator sizes it as is (``corral.estimate.estimate``);
- ``RunnerClient`` starts ``python -m corral.runner`` with ``argv()``;
- the runner reads it back (``add_arguments``, ``from_namespace``) and the engine loads it.

The record refuses values no clamping would let through (``num_ctx`` below
``MIN_NUM_CTX``, ``num_batch`` below 1, a negative ``num_parallel``), so nothing after the
scheduler clamps again. ``num_parallel`` 0 is "automatic": the scheduler decides it before a
load, and a runner refuses it.

Standard library only: the runner process, the scheduler and the estimator all import it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

__all__ = [
    "MAX_NUM_CTX",
    "MAX_NUM_THREAD",
    "MIN_NUM_CTX",
    "SLIDING_WINDOW_PATTERNS",
    "LoadSettings",
    "add_arguments",
    "from_namespace",
]

#: the smallest context a runner gets (Ollama's floor)
MIN_NUM_CTX = 4
#: the largest context per slot when the model does not say how long it was trained for
MAX_NUM_CTX = 1 << 20
#: ggml's limit on threads (GGML_MAX_N_THREADS); more aborts it
MAX_NUM_THREAD = 512

_FLASH_ATTN = {None: "auto", True: "on", False: "off"}

#: Architectures whose sliding-window layers see the last ``n_swa`` positions (llama.cpp's
#: "standard" window), with the layer pattern llama.cpp assumes when the GGUF does not give
#: one: of every ``n`` layers the first ``n - 1`` slide, the last attends to everything.
#: The runner keeps such layers in a window-sized cache (as llama-server), the estimate
#: sizes it, and a context shift stays exact (see ``Engine._shift``).
SLIDING_WINDOW_PATTERNS = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "cohere2": 4}


@dataclass(frozen=True, slots=True)
class LoadSettings:
    """How one runner is loaded; equal settings mean an equivalent runner."""

    model_path: str
    num_ctx: int = 4096  # context per slot
    num_parallel: int = 1  # slots; 0: automatic, decided when a load places the model
    num_batch: int = 512
    num_thread: int = 0  # 0: every CPU this process may use
    num_gpu: int = -1  # GPU layers asked for (-1: as many as fit); what a reload compares
    num_gpu_layers: int = 0  # GPU layers placed by the estimate: what llama.cpp gets
    main_gpu: int = 0
    gpu_ids: tuple[str, ...] = ()  # GPUs the runner may see (CUDA_VISIBLE_DEVICES)
    tensor_split: tuple[float, ...] = ()  # layers on each of gpu_ids
    use_mmap: bool = True
    flash_attention: bool | None = None  # None: llama.cpp decides (auto), as llama-server
    kv_cache_type: str = "f16"
    embedding: bool = False
    adapters: tuple[str, ...] = ()  # LoRA blob paths, applied in order at scale 1.0
    # RPC workers (host:port) holding layers; tensor_split is then per worker device
    rpc_servers: tuple[str, ...] = ()
    rpc_keep_output: bool = False  # the output matrix stays here while layers are remote
    draft_path: str | None = None  # a draft model (same vocabulary) for speculative decoding
    projector: str | None = None  # vision projector (clip GGUF) blob path, loaded with mtmd
    # how the process runs, not what it loads: never a reason for another runner
    verbose: bool = field(default=False, compare=False)
    #: a file every CPU runner on this machine locks around each decode step (None: off)
    cpu_lock_path: str | None = field(default=None, compare=False)
    #: a decode step on RPC workers longer than this ends the runner (0: never)
    rpc_stall_seconds: float = field(default=0.0, compare=False)

    def __post_init__(self) -> None:
        if self.num_ctx < MIN_NUM_CTX:
            raise ValueError(f"num_ctx must be at least {MIN_NUM_CTX}, not {self.num_ctx}")
        if self.num_batch < 1:
            raise ValueError(f"num_batch must be at least 1, not {self.num_batch}")
        if self.num_parallel < 0:
            raise ValueError(f"num_parallel must not be negative, not {self.num_parallel}")

    @property
    def batch_size(self) -> int:
        """The batch llama.cpp is given: ``num_batch``, but at least one token per slot (a
        decode step carries a token for every busy slot, and a step with more outputs than
        the batch aborts llama.cpp) and at most the whole context (llama.cpp's own cap, which
        also keeps a huge request inside its 32-bit field)."""
        slots = max(self.num_parallel, 1)
        return min(max(self.num_batch, slots), self.num_ctx * slots)

    def argv(self) -> list[str]:
        """The runner's command-line arguments (after ``python -m corral.runner``), which
        ``add_arguments`` and ``from_namespace`` read back into an equal record."""
        args = [
            "--model",
            self.model_path,
            "--ctx-size",
            str(self.num_ctx),
            "--parallel",
            str(self.num_parallel),
            "--batch-size",
            str(self.num_batch),
            "--threads",
            str(self.num_thread),
            f"--num-gpu={self.num_gpu}",
            "--n-gpu-layers",
            str(self.num_gpu_layers),
            "--main-gpu",
            str(self.main_gpu),
            "--kv-cache-type",
            self.kv_cache_type,
            "--flash-attn",
            _FLASH_ATTN[self.flash_attention],
        ]
        if self.gpu_ids:
            args += ["--gpu-ids", ",".join(self.gpu_ids)]
        if self.tensor_split:
            args += ["--tensor-split", ",".join(f"{n:g}" for n in self.tensor_split)]
        if not self.use_mmap:
            args.append("--no-mmap")
        if self.embedding:
            args.append("--embedding")
        if self.verbose:
            args.append("--verbose")
        if self.cpu_lock_path:
            args += ["--cpu-lock", self.cpu_lock_path]
        if self.rpc_servers:
            args += ["--rpc", ",".join(self.rpc_servers)]
            args += [f"--rpc-stall-timeout={self.rpc_stall_seconds:g}"]
        if self.rpc_keep_output:
            args.append("--rpc-keep-output")
        for adapter in self.adapters:
            args += ["--lora", adapter]
        if self.draft_path:
            args += ["--model-draft", self.draft_path]
        if self.projector:
            args += ["--mmproj", self.projector]
        return args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments ``LoadSettings.argv`` writes (llama.cpp's server names them so)."""
    parser.add_argument("--model", required=True)
    parser.add_argument("--ctx-size", type=int, default=4096, help="context per slot")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--num-gpu", type=int, default=-1, help="GPU layers asked for")
    parser.add_argument("--n-gpu-layers", type=int, default=0, help="GPU layers placed")
    parser.add_argument("--main-gpu", type=int, default=0)
    parser.add_argument("--gpu-ids", default="", help="GPUs placed on, comma list")
    parser.add_argument(
        "--tensor-split", default="", help="layers (or fractions) per visible GPU, comma list"
    )
    parser.add_argument("--no-mmap", action="store_true")
    parser.add_argument("--flash-attn", choices=("on", "off", "auto"), default="auto")
    parser.add_argument("--kv-cache-type", default="f16")
    parser.add_argument("--embedding", action="store_true")
    parser.add_argument(
        "--lora", action="append", default=[], help="LoRA adapter GGUF (repeatable), scale 1.0"
    )
    parser.add_argument("--model-draft", default=None, help="draft model (speculative decoding)")
    parser.add_argument("--mmproj", default=None, help="vision projector GGUF (clip)")
    parser.add_argument("--cpu-lock", default=None, help="file to lock around decode steps")
    parser.add_argument("--rpc", default="", help="RPC workers holding layers, comma list")
    parser.add_argument("--rpc-keep-output", action="store_true", help="output matrix stays")
    parser.add_argument("--rpc-stall-timeout", type=float, default=0.0, help="seconds, 0: off")
    parser.add_argument("--verbose", action="store_true")


def from_namespace(args: argparse.Namespace) -> LoadSettings:
    """The record ``add_arguments``' parsed values describe; ``ValueError`` says what is
    wrong with them."""
    if args.parallel < 1:
        raise ValueError("--parallel must be at least 1 (automatic is decided before a load)")
    try:
        split = tuple(float(part) for part in args.tensor_split.split(",") if part.strip())
    except ValueError:
        raise ValueError(
            f"--tensor-split must be numbers separated by commas: {args.tensor_split!r}"
        ) from None
    return LoadSettings(
        model_path=args.model,
        num_ctx=args.ctx_size,
        num_parallel=args.parallel,
        num_batch=args.batch_size,
        num_thread=args.threads,
        num_gpu=args.num_gpu,
        num_gpu_layers=args.n_gpu_layers,
        main_gpu=args.main_gpu,
        gpu_ids=tuple(part for part in args.gpu_ids.split(",") if part),
        tensor_split=split,
        use_mmap=not args.no_mmap,
        flash_attention={"on": True, "off": False}.get(args.flash_attn),
        kv_cache_type=args.kv_cache_type,
        embedding=args.embedding,
        adapters=tuple(args.lora),
        draft_path=args.model_draft,
        projector=args.mmproj,
        verbose=args.verbose,
        cpu_lock_path=args.cpu_lock,
        rpc_servers=tuple(part for part in args.rpc.split(",") if part),
        rpc_keep_output=args.rpc_keep_output,
        rpc_stall_seconds=args.rpc_stall_timeout,
    )
