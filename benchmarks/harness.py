"""The benchmark's harness: timing on the accelerator-synchronised clock of ``torch.utils.benchmark``,
a step's peak memory, and the round-robin schedule.

Why not ``torch.utils.benchmark.Timer.blocked_autorange`` / ``adaptive_autorange``: they time one
statement many times in a row (after warm-up runs of their own). A full-size step takes seconds here, so
that would multiply the run time, and on a shared machine a change of load between two variants' blocks
would move their ratio, which is what the benchmark reports. Round-robin (one step of each variant per
round) exposes every variant to the same load; ``torch.utils.benchmark.timer`` is the clock.
"""
import contextlib
import ctypes
import os
import threading


def _resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _return_freed_heap():
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory a step takes above what was in use when it started: CUDA's allocator statistics, or on
    the CPU the process's resident size sampled every 2 ms (freed heap is returned to the system first, so
    memory an earlier step left cached does not hide this one's)."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.start = self.peak = 0

    def __enter__(self):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            _return_freed_heap()
            self.start = self.peak = _resident_bytes()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _resident_bytes())

    def __exit__(self, *exc):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _resident_bytes())

    @property
    def megabytes(self):
        return (self.peak - self.start) / 2 ** 20

def timed(fn):
    """Seconds ``fn()`` takes, queued accelerator work included (``torch.utils.benchmark.timer``
    synchronises the accelerator before reading the clock)."""
    from torch.utils.benchmark import timer

    start = timer()
    fn()
    return timer() - start


def round_robin(variants, repeats, device):
    """{name: {"seconds": [timed rounds], "memory_mb": warm-up round's peak}} of ``variants`` ({name: fn})."""
    results = {name: {"seconds": []} for name in variants}
    for round_index in range(1 + repeats):
        print(f"  round {round_index}/{repeats}{' (warm-up, memory)' if round_index == 0 else ''}", flush=True)
        for name, fn in variants.items():
            if round_index == 0:
                with PeakMemory(device) as memory:
                    fn()
                results[name]["memory_mb"] = memory.megabytes
            else:
                results[name]["seconds"].append(timed(fn))
    return results
