"""Where models run: device, precision and CPU threads, chosen once and overridable."""

from __future__ import annotations

import logging
import os
import statistics
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import torch

log = logging.getLogger("textgen")


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


_process_threads: int | None = None  # what configure_cpu_threads set; None: torch's own count


def process_threads() -> int:
    """The process's torch CPU threads, as `configure_cpu_threads` set them (else torch's count in this thread)."""
    return _process_threads or torch.get_num_threads()


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
    global _process_threads
    _process_threads = threads
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


def _threads_setting(name: str, default: int) -> int:
    """A whole number of threads from the environment; `default` (and a line in the log) for anything else, so
    that a typing mistake in an operator's setting never stops a model from loading."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    log.warning("%s=%r is not a whole number of threads; using %d", name, raw, default)
    return default


_WIDE = threading.Lock()  # held by the one step that has taken more threads than the process's count
WIDE_ELEMENTS = 200_000  # `StepThreads.wide`: below this many numbers a second thread's start costs more than it saves


class StepThreads:
    """How many CPU threads one model's batched steps take: all this process's cores (or $TEXTGEN_STEP_THREADS)
    for a step of at least `min_rows` rows while that is measured faster, else the process's own count. Set in
    the scheduler's thread only, around each step:

        threads = StepThreads()
        with threads.around(rows=8):      # a step of 8 rows, timed
            step_together(model, asks)

    Why: a few rows of a large model are bound by arithmetic, not by reading the weights, so a second core
    helps there and nowhere else: a GPT-2-shaped step of 8 rows took 136 ms on one thread and 96 on two, 1 row
    57 and 59 (`python benchmarks/packed.py --model /tmp/gpt2-shaped --threads 2`). Why measured: an OpenMP
    thread whose core is busy (a training, the web server under load) stalls every product, so two threads
    can be far slower than one. Each size of batch (4-7 rows, 8-15, ...) keeps its recent step times with each
    count and takes the faster, trying the other again every `recheck` steps; and none takes a second thread
    while other programs keep a core busy (`OtherWork`).

    torch's thread count is per OS thread (OpenMP's), so the web server's threads and other models' schedulers
    keep theirs. torch also remembers the last count set, for the process: a thread that runs its first op during
    such a step starts with the step's count (the schedulers set their own when they start, and the count is
    put back after every step).
    """

    def __init__(self, most: int | None = None, min_rows: int = 4, recheck: int = 32,
                 others: OtherWork | None = None):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if most is None:
            most = _threads_setting("TEXTGEN_STEP_THREADS", cores)
        self.base = process_threads()
        self.most = max(self.base, min(most, cores))
        self.min_rows, self.recheck = min_rows, recheck
        self._times: dict[tuple[int, int], deque[float]] = {}  # (size, threads) -> recent step seconds
        self._steps: dict[int, int] = {}  # size -> steps taken
        self._trying: dict[int, int] = {}  # size -> the count being tried again (two steps), if any
        self._others = others or OtherWork()

    def choose(self, rows: int) -> int:
        """Threads for the next step of `rows` rows."""
        if self.most == self.base or rows < self.min_rows:
            return self.base
        if self._others.cores() > 0.5:
            # Another program is using a core (browsers, a training, a second server): a thread of ours there
            # would wait for it at every product. 8 pages in Chromium on this machine, each writing 50 tokens of
            # a GPT-2-shaped model: 25 s on two threads, 15 on one; step times alone did not show it in time.
            return self.base
        size = rows.bit_length()
        taken = self._steps[size] = self._steps.get(size, 0) + 1
        if taken % self.recheck == 0:  # see whether the other count is faster now: two steps, its old times dropped
            self._trying[size] = self._ranked(size)[1]
            self._times.pop((size, self._trying[size]), None)
            return self._trying[size]
        if taken % self.recheck == 1 and size in self._trying:
            return self._trying.pop(size)
        return self._ranked(size)[0]

    def record(self, rows: int, threads: int, seconds: float) -> None:
        """A step's time, as the choice between the counts sees it."""
        if self.most != self.base and rows >= self.min_rows:
            self._times.setdefault((rows.bit_length(), threads), deque(maxlen=5)).append(seconds)

    @contextmanager
    def around(self, rows: int) -> Iterator[int]:
        """Run the enclosed step with the chosen threads in this thread, time it, and put the count back. One
        step in the process at a time takes more than the process's count: two models' batches at once on two
        threads each would be four threads on two cores, each product waiting for a thread that is not running."""
        with self._taking(self.choose(rows)) as threads:
            start = time.perf_counter()
            yield threads
        self.record(rows, threads, time.perf_counter() - start)

    def wide(self, elements: int):
        """All the cores for plain work over `elements` numbers in this thread (choosing a batch's tokens from a
        large vocabulary), when they are free; the process's count otherwise (a context manager, as `around`).
        Not timed: such work (a softmax, a cumulative sum, a sort of each row) divides between threads without
        reading any weights, so it is faster on two cores whenever both are idle (8 rows of GPT-2's 50,257 scores
        chosen for in 15 ms on one thread, 10 on two)."""
        free = self.most > self.base and elements >= WIDE_ELEMENTS and self._others.cores() <= 0.5
        return self._taking(self.most if free else self.base)

    @contextmanager
    def _taking(self, threads: int) -> Iterator[int]:
        """`threads` in this thread for the enclosed work, if no other step has the extra cores; then put back."""
        if threads != self.base and not _WIDE.acquire(blocking=False):
            threads = self.base  # another model's step has the extra cores now
        if threads != self.base:
            torch.set_num_threads(threads)
        try:
            yield threads
        finally:
            if threads != self.base:
                torch.set_num_threads(self.base)
                _WIDE.release()

    def _ranked(self, size: int) -> tuple[int, int]:
        """(the faster count for this size, the other); all the cores until one has been measured slower."""
        many, few = self._times.get((size, self.most)), self._times.get((size, self.base))
        if many and few and statistics.median(few) < statistics.median(many):
            return self.base, self.most
        return self.most, self.base


class OtherWork:
    """How many cores other programs have kept busy lately (this process's own threads not counted), from
    /proc/stat and /proc/self/stat, read at most every `every` seconds; 0 where those cannot be read. A container
    that sees its host's CPUs counts the host's other work too: its steps then keep one thread, as before."""

    def __init__(self, every: float = 0.5):
        self.every = every
        self._at, self._last, self._busy = 0.0, self._read(), 0.0

    def cores(self) -> float:
        now = time.monotonic()
        if now - self._at >= self.every:
            reading = self._read()
            if reading and self._last:
                (total, idle, mine), (total0, idle0, mine0) = reading, self._last
                ticks = total - total0  # all cores' ticks in the interval
                if ticks > 0:
                    cores = os.cpu_count() or 1
                    others = (ticks - (idle - idle0)) - (mine - mine0)
                    self._busy = max(0.0, others / ticks * cores)
            self._at, self._last = now, reading
        return self._busy

    @staticmethod
    def _read() -> tuple[int, int, int] | None:
        """(all ticks, idle ticks, this process's ticks), or None."""
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
            with open("/proc/self/stat") as f:
                mine = f.read().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            return None
        # /proc/stat: user nice system idle iowait irq softirq steal guest guest_nice (guest time is in user already)
        return sum(fields[:8]), fields[3] + fields[4], int(mine[11]) + int(mine[12])  # utime, stime
