from abc import abstractmethod
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .base_anonymizer import BaseAnonymizer, relative_length


class BaseBlur(BaseAnonymizer):
    """Base class of the separable blurs: a filter of every channel with a symmetric 1-D kernel vertically and
    then horizontally, with reflected borders (OpenCV's default ``BORDER_REFLECT_101``).

    The kernel length is either fixed (``kernel_size`` pixels) or a fraction of each crop's longer side
    (``kernel_ratio``), so that a face region is blurred alike whatever its size in pixels: a fixed kernel
    that hides a 30-pixel face leaves a 200-pixel one recognisable. A kernel longer than the crop is shrunk,
    along that axis only, to the largest odd length that fits, so tiny faces are still blurred as much as they
    can be and a 1x1 crop is left as it is. The blur is differentiable and runs on the crops' device.

    Float32 crops on the CPU that need no gradient (evaluation) are filtered by OpenCV, which computes the same
    sums several times faster; the two paths agree to float rounding (tested to 1e-3 grey levels), so a frame
    anonymized either way rounds to the same pixels but for the rare value at a .5 boundary. The video tool
    filters its uint8 frames directly, see :meth:`anonymize_bgr`.

    Args:
        kernel_size (int, optional): Odd length of the kernel in pixels, for every crop. Defaults to None.
        kernel_ratio (float, optional): Length of the kernel as a fraction of the crop's longer side, in
            (0, 1], rounded to the nearest odd number of pixels. Defaults to None: ``default_kernel_ratio``
            when ``kernel_size`` is not given either.
    """

    default_kernel_ratio = 0.5

    def __init__(self, kernel_size: Optional[int] = None, kernel_ratio: Optional[float] = None) -> None:
        super().__init__()
        if kernel_size is not None and kernel_ratio is not None:
            raise ValueError(f'give kernel_size or kernel_ratio, not both (got {kernel_size!r} and '
                             f'{kernel_ratio!r})')
        if kernel_size is not None and not (isinstance(kernel_size, int) and kernel_size > 0
                                            and kernel_size % 2 == 1):
            raise ValueError(f'kernel_size must be a positive odd int, but got {kernel_size!r}')
        if kernel_size is None and kernel_ratio is None:
            kernel_ratio = self.default_kernel_ratio
        if kernel_ratio is not None and not 0 < kernel_ratio <= 1:
            raise ValueError(f'kernel_ratio must be in (0, 1], but got {kernel_ratio!r}')
        self.kernel_size = kernel_size
        self.kernel_ratio = kernel_ratio

    @abstractmethod
    def filter(self, padded: Tensor, size_h: int, size_w: int) -> Tensor:
        """Filter reflect-padded crops with the kernels of the given lengths, without padding ("valid").

        Args:
            padded (Tensor): ``(N, C, h + size_h - 1, w + size_w - 1)`` crops.
            size_h (int): Odd kernel length along the height.
            size_w (int): Odd kernel length along the width.

        Returns:
            Tensor: ``(N, C, h, w)`` filtered crops.
        """

    @abstractmethod
    def opencv_filter(self, image: np.ndarray, size_h: int, size_w: int) -> np.ndarray:
        """:meth:`filter` done by OpenCV on one image, with reflected borders.

        Args:
            image (np.ndarray): ``(h, w, C)`` float32 or uint8, C <= 4.
            size_h (int): Odd kernel length along the height.
            size_w (int): Odd kernel length along the width.

        Returns:
            np.ndarray: ``(h, w, C)`` of the image's dtype (a uint8 result is rounded).
        """

    def kernel_lengths(self, height: int, width: int) -> Tuple[int, int]:
        """The odd kernel lengths along the height and the width of a crop of ``height x width`` pixels."""
        length = self.kernel_size or relative_length(self.kernel_ratio, height, width, odd=True)
        return self._fit(length, height), self._fit(length, width)

    def anonymize_bgr(self, image: np.ndarray) -> np.ndarray:
        """The blur of one uint8 image, by OpenCV in uint8, for the video tool.

        The same kernels as :meth:`anonymize`; OpenCV rounds the filtered values to whole grey levels, so a region
        blended from this patch differs by at most one grey level from one blended from the float patch.

        Args:
            image (np.ndarray): ``(h, w, 3)`` uint8, any channel order (every channel is filtered alike); a
                view into a frame is fine.

        Returns:
            np.ndarray: A new ``(h, w, 3)`` uint8 image.
        """
        return self.opencv_filter(image, *self.kernel_lengths(*image.shape[:2]))

    def anonymize(self, crops: Tensor) -> Tensor:
        height, width = crops.shape[-2:]
        size_h, size_w = self.kernel_lengths(height, width)
        if (crops.device.type == 'cpu' and crops.dtype == torch.float32 and crops.shape[1] <= 4
                and not (torch.is_grad_enabled() and crops.requires_grad)):
            images = crops.permute(0, 2, 3, 1).contiguous().numpy()
            filtered = np.stack([self.opencv_filter(image, size_h, size_w).reshape(image.shape) for image in images])
            return torch.from_numpy(filtered).permute(0, 3, 1, 2).clamp(0, 255)
        padded = F.pad(crops, (size_w // 2, size_w // 2, size_h // 2, size_h // 2), mode='reflect')
        # A convex combination of values in [0, 255] stays there but for float rounding, which could leave a
        # constant 255 face at 255.00002.
        return self.filter(padded, size_h, size_w).clamp(0, 255)

    @staticmethod
    def _fit(length: int, axis: int) -> int:
        """The kernel length along an axis of ``axis`` pixels: ``length``, or the largest odd number that does
        not exceed ``axis`` (reflect padding needs the padding to be shorter than the axis)."""
        return min(length, axis if axis % 2 == 1 else axis - 1)
