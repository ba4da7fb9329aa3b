from abc import abstractmethod

import torch.nn.functional as F
from torch import Tensor

from .base_anonymizer import BaseAnonymizer


class BaseBlur(BaseAnonymizer):
    """Base class of the separable blurs: a depthwise convolution of every channel with a symmetric 1-D kernel
    vertically and then horizontally, with reflected borders (OpenCV's default ``BORDER_REFLECT_101``).

    A kernel longer than the crop is shrunk, along that axis only, to the largest odd length that fits, so
    tiny faces are still blurred as much as they can be and a 1x1 crop is left as it is. The blur is
    differentiable and runs on the crops' device.

    Args:
        kernel_size (int): Odd length of the kernel. Defaults to 15.
    """

    def __init__(self, kernel_size: int = 15) -> None:
        super().__init__()
        if not (isinstance(kernel_size, int) and kernel_size > 0 and kernel_size % 2 == 1):
            raise ValueError(f'kernel_size must be a positive odd int, but got {kernel_size!r}')
        self.kernel_size = kernel_size

    @abstractmethod
    def kernel(self, size: int) -> Tensor:
        """The 1-D kernel of a given length.

        Args:
            size (int): Odd length, at most ``kernel_size``.

        Returns:
            Tensor: ``(size,)`` float64 weights that sum to 1.
        """

    def anonymize(self, crops: Tensor) -> Tensor:
        channels, height, width = crops.shape[1:]
        size_h, size_w = self._fit(height), self._fit(width)
        weight_h = self.kernel(size_h).to(crops).view(1, 1, size_h, 1).repeat(channels, 1, 1, 1)
        weight_w = self.kernel(size_w).to(crops).view(1, 1, 1, size_w).repeat(channels, 1, 1, 1)
        padded = F.pad(crops, (size_w // 2, size_w // 2, size_h // 2, size_h // 2), mode='reflect')
        blurred = F.conv2d(F.conv2d(padded, weight_h, groups=channels), weight_w, groups=channels)
        # A convex combination of values in [0, 255] stays there but for float rounding, which could leave a
        # constant 255 face at 255.00002.
        return blurred.clamp(0, 255)

    def _fit(self, length: int) -> int:
        """The kernel length along an axis of ``length`` pixels: ``kernel_size``, or the largest odd number
        that does not exceed ``length`` (reflect padding needs the padding to be shorter than the axis)."""
        return min(self.kernel_size, length if length % 2 == 1 else length - 1)
