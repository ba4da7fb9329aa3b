from typing import Tuple

import torch
from torch import Tensor

from mmanon.registry import MODELS
from .base_anonymizer import BaseAnonymizer


@MODELS.register_module()
class GaussianNoise(BaseAnonymizer):
    """Add Gaussian noise to every face and clip to [0, 255].

    The noise pattern depends only on ``seed`` and the crop shape ``(C, h, w)``, and every crop of a batch
    gets the same one. A face therefore keeps one pattern in all frames of a clip: noise drawn afresh for each
    frame could be averaged away by an attacker. Patterns are drawn on the CPU from a generator of their own,
    so they are reproducible across runs and devices, and the global random state is neither used nor
    advanced. Differentiable with respect to the crops.

    Args:
        sigma (float): Standard deviation of the noise in pixel values. Defaults to 40.
        seed (int): Seed of the noise patterns. Defaults to 0.
    """

    def __init__(self, sigma: float = 40., seed: int = 0) -> None:
        super().__init__()
        if not sigma >= 0:
            raise ValueError(f'sigma must be non-negative, but got {sigma!r}')
        if not (isinstance(seed, int) and seed >= 0):
            raise ValueError(f'seed must be a non-negative int, but got {seed!r}')
        self.sigma = sigma
        self.seed = seed

    def pattern(self, shape: Tuple[int, int, int]) -> Tensor:
        """The noise pattern of a crop shape.

        Args:
            shape (tuple[int, int, int]): ``(C, h, w)``.

        Returns:
            Tensor: ``(C, h, w)`` float32 noise with standard deviation ``sigma``, on the CPU.
        """
        generator = torch.Generator().manual_seed(self.seed)
        return self.sigma * torch.randn(shape, generator=generator)

    def anonymize(self, crops: Tensor) -> Tensor:
        noise = self.pattern(tuple(crops.shape[1:])).to(crops)
        return (crops + noise).clamp(0, 255)
