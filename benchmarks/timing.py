"""Timing shared by the benchmark scripts."""
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Sequence, Tuple

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
    return statistics.median(seconds_in_turn(dict(step=step), inputs, warmup, device)['step'])


def seconds_in_turn(steps: Dict[str, Callable], inputs: Sequence, warmup: int, device: str) -> Dict[str, List[float]]:
    """The wall-clock time of each call of several steps that take turns on each input, so that all of them see
    the same load of the machine.

    The order of the turns rotates from one input to the next (for two steps: A B, B A, A B, ...), so that no step
    always runs right after the same other one (whose caches, allocations and heat it would inherit), and the
    i-th times of all steps were taken side by side: their ratios pair up iteration by iteration.

    Args:
        steps (dict[str, callable]): What to time, by name; each is called once per input.
        inputs (Sequence): The inputs, in order.
        warmup (int): How many of the first inputs warm caches and allocators up, for every step, without being
            timed.
        device (str): Where the work runs; CUDA work is synchronised around each call.

    Returns:
        dict[str, list[float]]: Seconds of each timed call, by name, in the order of the inputs.
    """
    times = {name: [] for name in steps}
    names = list(steps)
    for i, x in enumerate(inputs):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            if device.startswith('cuda'):
                torch.cuda.synchronize()
            start = time.perf_counter()
            steps[name](x)
            if device.startswith('cuda'):
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def quartiles(values: Sequence[float]) -> Tuple[float, float, float]:
    """The first quartile, the median and the third quartile of ``values`` (a single value for all three when
    there is one)."""
    if len(values) < 2:
        return (values[0], ) * 3
    first, median, third = statistics.quantiles(values, n=4, method='inclusive')
    return first, median, third


def machine() -> str:
    """The processor, torch's CPU threads and the load average, to print beside the figures."""
    load = ' '.join(f'{x:.2f}' for x in os.getloadavg())
    return (f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads '
            f'{torch.get_num_threads()}, load average {load}')
