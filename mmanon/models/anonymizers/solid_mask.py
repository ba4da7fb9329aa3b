from typing import Sequence, Union

import numpy as np
from torch import Tensor

from mmanon.registry import MODELS
from .base_anonymizer import BaseAnonymizer


@MODELS.register_module()
class SolidMask(BaseAnonymizer):
    """Paint every face a solid colour.

    Args:
        fill (float or Sequence[float]): The pixel value in [0, 255], one for all channels or one per channel
            (in the channel order of the data). Defaults to 0.
    """

    def __init__(self, fill: Union[float, Sequence[float]] = 0) -> None:
        super().__init__()
        values = tuple(fill) if isinstance(fill, Sequence) else (fill, )
        if not (values and all(0 <= value <= 255 for value in values)):
            raise ValueError(f'fill must be a value or a non-empty sequence of values in [0, 255], '
                             f'but got {fill!r}')
        self.fill = values

    def anonymize_bgr(self, image: np.ndarray) -> np.ndarray:
        """The mask of one uint8 BGR image, for the video tool: per-channel fill values name the data's RGB
        channels, as in training, and are put in BGR order here; each is rounded to a whole grey level, so a
        region blended from this patch differs by at most one grey level from one blended from the float patch.

        Args:
            image (np.ndarray): ``(h, w, 3)`` uint8 BGR.

        Returns:
            np.ndarray: A new ``(h, w, 3)`` uint8 image.
        """
        self._check_channels(image.shape[2])
        fill = np.rint(np.asarray(self.fill[::-1], np.float64)).astype(np.uint8)
        return np.broadcast_to(fill, image.shape).copy()

    def _check_channels(self, channels: int) -> None:
        if len(self.fill) not in (1, channels):
            raise ValueError(f'SolidMask has {len(self.fill)} fill values, but the crops have {channels} '
                             'channels; give one value or one per channel')

    def anonymize(self, crops: Tensor) -> Tensor:
        self._check_channels(crops.size(1))
        fill = crops.new_tensor(self.fill).view(1, -1, 1, 1)
        return fill.expand_as(crops).clone()
