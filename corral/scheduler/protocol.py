"""What the scheduler holds of a runner, and what handlers may call on ``ref.runner``."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, Protocol

from corral.runner.client import RunnerEmbeddings
from corral.runner.events import CompletionEvent
from corral.runner.settings import LoadSettings

__all__ = ["RunnerFactory", "RunnerLike", "RunnerProcess"]


class RunnerProcess(Protocol):
    """What the scheduler itself needs of a runner: its settings, whether its process
    lives, how to stop it and how to hear that it ended."""

    config: LoadSettings

    @property
    def alive(self) -> bool: ...

    @property
    def pid(self) -> int: ...

    async def stop(self, grace: float = 5.0) -> None: ...

    async def exited(self) -> str:
        """Return once the process has ended, saying how (``exit status 1``, ``killed by
        signal 9 (SIGKILL)``)."""
        ...


class RunnerLike(RunnerProcess, Protocol):
    """A runner as the scheduler hands it out (``ref.runner``): the process it manages and
    the inference calls the server makes on it. ``RunnerClient`` is one; so is a test fake.
    """

    def completion(self, payload: dict[str, Any]) -> AsyncGenerator[CompletionEvent, None]:
        """Stream the runner's events for one completion; closing the stream cancels it."""
        ...

    async def tokenize(self, text: str, *, add_special: bool = False) -> list[int]: ...

    async def detokenize(self, tokens: Sequence[int]) -> str: ...

    async def embed(
        self,
        texts: Sequence[str] | Sequence[list[int]],
        *,
        truncate: bool = True,
        num_ctx: int | None = None,
    ) -> RunnerEmbeddings:
        """Pooled, unnormalised vectors of ``texts``, in input order."""
        ...


RunnerFactory = Callable[[LoadSettings], Awaitable[RunnerLike]]
