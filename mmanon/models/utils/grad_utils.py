"""Small autograd tools for training the anonymizer inside a stock detector's training step."""
import torch
from torch import Tensor, nn


class _AttachLoss(torch.autograd.Function):
    """Identity on ``x`` whose backward also back-propagates ``loss`` with gradient 1."""

    @staticmethod
    def forward(ctx, x: Tensor, loss: Tensor) -> Tensor:
        ctx.loss_shape = loss.shape
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, grad.new_ones(ctx.loss_shape)


def attach_loss(x: Tensor, loss: Tensor) -> Tensor:
    """Return ``x`` unchanged, such that any backward pass through it also minimises ``loss``.

    The stock detector's ``train_step`` back-propagates only the detection loss. The anonymizer's own terms
    (the adversarial loss against the face discriminator and the L1 term) are attached to the anonymized clips
    this way, so the one backward pass of the detection loss gives the anonymizer the gradient of
    ``detection loss + loss``, synchronised across ranks by the same DDP reduction.

    Args:
        x (Tensor): A tensor the detection loss depends on (the anonymized clips).
        loss (Tensor): A scalar to minimise as well; it must depend on what ``x`` depends on.

    Returns:
        Tensor: ``x``'s values.
    """
    return _AttachLoss.apply(x, loss)


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
