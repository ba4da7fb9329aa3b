from typing import Optional

import torch
from torch import Tensor

from mmanon.registry import MODELS
from .base_blur import BaseBlur


@MODELS.register_module()
class GaussianBlur(BaseBlur):
    """Blur with a ``kernel_size x kernel_size`` Gaussian kernel (``cv2.GaussianBlur``).

    Borders are reflected and kernels longer than the crop shrunk to fit, see :class:`BaseBlur`.

    Args:
        kernel_size (int): Odd side of the kernel. Defaults to 15.
        sigma (float, optional): Standard deviation of the Gaussian in pixels. None derives it from the
            kernel length as ``cv2.getGaussianKernel`` does, ``0.3 * ((size - 1) / 2 - 1) + 0.8``, and a
            shrunk kernel then gets the sigma of its own length. Defaults to None.
    """

    def __init__(self, kernel_size: int = 15, sigma: Optional[float] = None) -> None:
        super().__init__(kernel_size=kernel_size)
        if sigma is not None and not sigma > 0:
            raise ValueError(f'sigma must be None or positive, but got {sigma!r}')
        self.sigma = sigma

    def kernel(self, size: int) -> Tensor:
        sigma = self.sigma if self.sigma is not None else 0.3 * ((size - 1) / 2 - 1) + 0.8
        offsets = torch.arange(size, dtype=torch.float64) - size // 2
        weights = torch.exp(-offsets**2 / (2 * sigma**2))
        return weights / weights.sum()
