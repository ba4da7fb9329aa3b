"""Gradient tools of the adversarial game: a frozen player's call, means over all ranks' faces."""
from typing import Iterable, List

import torch
from mmengine.dist import all_reduce, get_world_size
from torch import nn


def frozen_call(module: nn.Module, *args, **kwargs):
    """Call ``module`` with its parameters detached: its inputs get gradients, its parameters none.

    Unlike switching ``requires_grad`` off for the call, this leaves every parameter's flag as it is, which
    DistributedDataParallel requires once it has wrapped the model.

    Args:
        module (nn.Module): The module to run.
        *args: Positional arguments of its ``forward``.
        **kwargs: Keyword arguments of its ``forward``.

    Returns:
        Whatever ``module(*args, **kwargs)`` returns.
    """
    detached = {name: param.detach() for name, param in module.named_parameters()}
    return torch.func.functional_call(module, detached, args, kwargs)


def global_mean_scales(*counts: float, device=None) -> List[float]:
    """For each local count, the factor that turns a rank's sum into its share of the mean over all ranks.

    The factor is ``world_size / (the count summed over the ranks)``: averaging ``sum * factor`` over the ranks
    (as DDP averages gradients) gives the mean over every element of the global batch, however the elements
    are spread over the ranks; a rank without any contributes zero. All counts travel in one collective call,
    which every rank must make.

    Args:
        *counts (float): This rank's counts (faces, pixels, ...).
        device (torch.device, optional): Where the collective runs (the model's device). Defaults to None.

    Returns:
        list[float]: One factor per count; 0 for a count that is zero on every rank (there is nothing to
        average, and every rank's sum is zero).
    """
    totals = torch.tensor([float(c) for c in counts], dtype=torch.float64, device=device)
    all_reduce(totals)
    world_size = get_world_size()
    return [world_size / total if total > 0 else 0. for total in totals.tolist()]


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Average each parameter's gradient over the ranks, outside DDP's own reduction (for backward passes that
    do not go through the wrapped model). A parameter without a gradient takes part with zeros, so that every
    rank makes the same collective calls.

    Args:
        params (Iterable[Parameter]): The parameters.
    """
    world_size = get_world_size()
    if world_size == 1:
        return
    for param in params:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        all_reduce(param.grad)
        param.grad /= world_size
