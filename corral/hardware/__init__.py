"""What this machine has: NVIDIA GPUs (through ctypes), the CPU, and system memory."""

from corral.hardware.cpu import CpuInfo, cpu_info
from corral.hardware.gpu import MINIMUM_GPU_BYTES, GpuDiscovery, GpuInfo
from corral.hardware.memory import SystemMemory, system_memory
from corral.hardware.system import Hardware, SystemInfo, llama_cpp_offloads

__all__ = [
    "MINIMUM_GPU_BYTES",
    "CpuInfo",
    "GpuDiscovery",
    "GpuInfo",
    "Hardware",
    "SystemInfo",
    "SystemMemory",
    "cpu_info",
    "llama_cpp_offloads",
    "system_memory",
]
