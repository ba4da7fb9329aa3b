from typing import Sequence, Union

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

    def anonymize(self, crops: Tensor) -> Tensor:
        if len(self.fill) not in (1, crops.size(1)):
            raise ValueError(f'SolidMask has {len(self.fill)} fill values, but the crops have {crops.size(1)} '
                             'channels; give one value or one per channel')
        fill = crops.new_tensor(self.fill).view(1, -1, 1, 1)
        return fill.expand_as(crops).clone()
