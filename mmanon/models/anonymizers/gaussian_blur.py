from typing import Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmanon.registry import MODELS
from .base_blur import BaseBlur


@MODELS.register_module()
class GaussianBlur(BaseBlur):
    """Blur with a ``k x k`` Gaussian kernel (``cv2.GaussianBlur``).

    A depthwise convolution: its cost grows with the kernel length, so large face-relative kernels on large
    faces are slow (:class:`BoxBlur` is not). Borders are reflected and kernels longer than the crop shrunk to
    fit, see :class:`BaseBlur`.

    Args:
        kernel_size (int, optional): Odd side of the kernel in pixels. Defaults to None.
        kernel_ratio (float, optional): Side of the kernel as a fraction of the crop's longer side. Defaults to
            None: ``default_kernel_ratio`` when ``kernel_size`` is not given either.
        sigma (float, optional): Standard deviation of the Gaussian in pixels. None derives it from the
            kernel length as ``cv2.getGaussianKernel`` does, ``0.3 * ((size - 1) / 2 - 1) + 0.8``, and a
            shrunk kernel then gets the sigma of its own length. Defaults to None.
    """

    default_kernel_ratio = 0.5

    def __init__(self,
                 kernel_size: Optional[int] = None,
                 kernel_ratio: Optional[float] = None,
                 sigma: Optional[float] = None) -> None:
        super().__init__(kernel_size=kernel_size, kernel_ratio=kernel_ratio)
        if sigma is not None and not sigma > 0:
            raise ValueError(f'sigma must be None or positive, but got {sigma!r}')
        self.sigma = sigma

    def kernel(self, size: int) -> Tensor:
        """The normalised 1-D Gaussian of odd length ``size``, float64."""
        sigma = self.sigma if self.sigma is not None else 0.3 * ((size - 1) / 2 - 1) + 0.8
        offsets = torch.arange(size, dtype=torch.float64) - size // 2
        weights = torch.exp(-offsets**2 / (2 * sigma**2))
        return weights / weights.sum()

    def opencv_filter(self, image: np.ndarray, size_h: int, size_w: int) -> np.ndarray:
        kernel_h = self.kernel(size_h).numpy().astype(np.float32)
        kernel_w = self.kernel(size_w).numpy().astype(np.float32)
        return cv2.sepFilter2D(image, -1, kernel_w, kernel_h, borderType=cv2.BORDER_REFLECT_101)

    def filter(self, padded: Tensor, size_h: int, size_w: int) -> Tensor:
        channels = padded.shape[1]
        weight_h = self.kernel(size_h).to(padded).view(1, 1, size_h, 1).repeat(channels, 1, 1, 1)
        weight_w = self.kernel(size_w).to(padded).view(1, 1, 1, size_w).repeat(channels, 1, 1, 1)
        return F.conv2d(F.conv2d(padded, weight_h, groups=channels), weight_w, groups=channels)
