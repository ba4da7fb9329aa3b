"""Timing shared by the benchmark scripts."""
import os
import platform
import statistics
import time
from typing import Callable, Dict, Sequence

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
    return median_seconds_in_turn(dict(step=step), inputs, warmup, device)['step']


def median_seconds_in_turn(steps: Dict[str, Callable], inputs: Sequence, warmup: int, device: str) -> Dict[str, float]:
    """Like :func:`median_seconds` for several steps that take turns on each input, so that all of them see the
    same load of the machine.

    Args:
        steps (dict[str, callable]): What to time, by name; each is called once per input, in this order.
        inputs (Sequence): The inputs, in order.
        warmup (int): How many of the first inputs warm caches and allocators up without being timed.
        device (str): Where the work runs; CUDA work is synchronised around each call.

    Returns:
        dict[str, float]: Seconds, by name.
    """
    times = {name: [] for name in steps}
    for i, x in enumerate(inputs):
        for name, step in steps.items():
            if device.startswith('cuda'):
                torch.cuda.synchronize()
            start = time.perf_counter()
            step(x)
            if device.startswith('cuda'):
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def machine() -> str:
    """The processor, torch's CPU threads and the load average, to print beside the figures."""
    load = ' '.join(f'{x:.2f}' for x in os.getloadavg())
    return (f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads '
            f'{torch.get_num_threads()}, load average {load}')
