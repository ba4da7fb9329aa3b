"""Timing shared by the benchmark scripts."""
import os
import platform
import statistics
import time
from typing import Callable, Sequence

import torch


def median_seconds(step: Callable, inputs: Sequence, warmup: int, device: str) -> float:
    """The median wall-clock time of ``step(x)`` over ``inputs``, the first ``warmup`` calls untimed.

    Args:
        step (callable): What to time, called once per input.
        inputs (Sequence): The inputs, in order.
        warmup (int): How many of the first calls warm caches and allocators up without being timed.
        device (str): Where the work runs; CUDA work is synchronised around each call.

    Returns:
        float: Seconds.
    """
    times = []
    for i, x in enumerate(inputs):
        if device.startswith('cuda'):
            torch.cuda.synchronize()
        start = time.perf_counter()
        step(x)
        if device.startswith('cuda'):
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> str:
    """The processor, torch's CPU threads and the load average, to print beside the figures."""
    load = ' '.join(f'{x:.2f}' for x in os.getloadavg())
    return (f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads '
            f'{torch.get_num_threads()}, load average {load}')
