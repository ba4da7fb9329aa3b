import torch
from torch import Tensor

from mmanon.registry import MODELS
from .base_blur import BaseBlur


@MODELS.register_module()
class BoxBlur(BaseBlur):
    """Replace each pixel by the mean of the ``kernel_size x kernel_size`` square around it (``cv2.blur``).

    Borders are reflected and kernels longer than the crop shrunk to fit, see :class:`BaseBlur`.

    Args:
        kernel_size (int): Odd side of the averaging square. Defaults to 15.
    """

    def kernel(self, size: int) -> Tensor:
        return torch.full((size, ), 1 / size, dtype=torch.float64)
