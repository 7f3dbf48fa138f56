"""What this machine has: system memory (and, later, GPUs and CPU features)."""

from corral.hardware.memory import SystemMemory, system_memory

__all__ = ["SystemMemory", "system_memory"]
