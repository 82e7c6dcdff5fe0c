"""Where models run: device, precision and CPU threads, chosen once and overridable."""

from __future__ import annotations

import os

import torch


def pick_device(preference: str | None = None) -> torch.device:
    """CUDA, then Apple MPS, then CPU; `preference` (or $TEXTGEN_DEVICE) overrides, e.g. "cpu" or "cuda:1"."""
    preference = preference or os.environ.get("TEXTGEN_DEVICE") or None
    if preference:
        device = torch.device(preference)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {preference!r} was asked for, but CUDA is not available here")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError(f"device {preference!r} was asked for, but MPS is not available here")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that have it, else fp16 on GPU; fp32 on CPU (bf16 measured 5x slower on our CPUs)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def pick_mixed_precision() -> str:
    """accelerate's name for the training precision that `pick_dtype` would choose for this machine's device.

    fp32 on CPU: bf16 autocast on our AVX-512-BF16 CPU was measured 13x slower for a small Transformer's
    training step (912 ms against 70 ms, benchmarks/train_cpu.py's model at batch 12 x 64).
    """
    device = pick_device()
    if device.type != "cuda":
        return "no"
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}[pick_dtype(device)]


def configure_cpu_threads(threads: int | None = None) -> int:
    """Set torch's CPU threads deliberately; `threads` or $TEXTGEN_THREADS, else 1.

    Why 1 by default: the small models here are memory- and latency-bound, and on a 2-core machine that
    is doing other work, 2 OpenMP threads were measured several times slower than 1 (a straggling
    thread stalls every op). More cores that are really idle do help large batches: set it then.
    """
    if threads is None:
        threads = int(os.environ.get("TEXTGEN_THREADS", "1"))
    threads = max(1, min(threads, os.cpu_count() or 1))
    torch.set_num_threads(threads)
    # nn.LSTM's oneDNN path is several times slower than the plain kernels for small batches here.
    torch.backends.mkldnn.enabled = False
    return threads


def available_memory_bytes() -> int | None:
    """Memory this process can still take without swapping or being killed, or None where it cannot be read.

    The smaller of the kernel's estimate (MemAvailable) and the room left under a container's limit (cgroup v2,
    then v1): a Space or a Docker container sees the host's memory in /proc/meminfo but is killed at its own limit.
    """
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # "max", or v1's huge number, means no limit
            found.append(max(0, int(limit) - usage))
        break
    return min(found) if found else None


def describe_hardware() -> str:
    """A short description for model cards and benchmark reports, e.g. '2-core CPU (1 torch thread)'."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{os.cpu_count()}-core CPU ({torch.get_num_threads()} torch thread(s))"
