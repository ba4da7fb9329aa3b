import torch.nn.functional as F
from torch import Tensor

from mmanon.registry import MODELS
from .base_anonymizer import BaseAnonymizer


@MODELS.register_module()
class Pixelate(BaseAnonymizer):
    """Replace each ``block_size x block_size`` block, counted from the top-left corner, by its mean colour.

    The partial blocks along the bottom and right borders average the pixels they cover; a crop smaller than
    a block becomes one flat colour. Differentiable.

    Args:
        block_size (int): Side of the blocks in pixels. Defaults to 8.
    """

    def __init__(self, block_size: int = 8) -> None:
        super().__init__()
        if not (isinstance(block_size, int) and block_size > 0):
            raise ValueError(f'block_size must be a positive int, but got {block_size!r}')
        self.block_size = block_size

    def anonymize(self, crops: Tensor) -> Tensor:
        height, width = crops.shape[-2:]
        block = (min(self.block_size, height), min(self.block_size, width))
        # With ceil_mode the windows that run past the border divide by the pixels they cover.
        means = F.avg_pool2d(crops, block, ceil_mode=True)
        blocks = means.repeat_interleave(block[0], dim=2).repeat_interleave(block[1], dim=3)
        return blocks[..., :height, :width]
