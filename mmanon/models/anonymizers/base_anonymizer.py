import math
from abc import abstractmethod
from typing import Optional, Sequence, Tuple, Union

from mmengine.model import BaseModule
from torch import Tensor


class BaseAnonymizer(BaseModule):
    """Base class of the face anonymizers: modules that modify face crops so that the face can no longer be
    recognised.

    Every anonymizer maps a batch of face crops ``(N, C, h, w)``, float pixel values in [0, 255] in the
    channel order of the data, to a new tensor of the same shape, dtype and device with values in [0, 255].
    Subclasses implement :meth:`anonymize`; :meth:`forward` validates the input and handles empty batches,
    so ``anonymize`` always sees at least one crop of a valid size.

    Handcrafted anonymizers are deterministic and apply the very same operation to every crop, so all frames
    of one face track are changed alike.

    Args:
        crop_size (Sequence[int], optional): ``(h, w)`` when the method only works on crops of one fixed size
            (the caller then resizes each crop to it and back); None when it works on crops of any size, down
            to 1x1, which the caller then passes at their native resolution. Defaults to None.
        init_cfg (dict or list[dict], optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 crop_size: Optional[Sequence[int]] = None,
                 init_cfg: Optional[Union[dict, list]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if crop_size is not None:
            if not (len(crop_size) == 2 and all(isinstance(s, int) and s > 0 for s in crop_size)):
                raise ValueError(f'crop_size must be None or a pair of positive ints (h, w), but got {crop_size}')
            crop_size = tuple(crop_size)
        self.crop_size: Optional[Tuple[int, int]] = crop_size

    def forward(self, crops: Tensor) -> Tensor:
        """Anonymize a batch of face crops.

        Args:
            crops (Tensor): ``(N, C, h, w)`` float pixel values in [0, 255]; N may be 0.

        Returns:
            Tensor: The anonymized crops, a new tensor of the same shape, dtype and device (it never aliases
            ``crops``, so the caller may write into either), values in [0, 255].
        """
        if crops.dim() != 4:
            raise ValueError(f'{type(self).__name__} expects crops of shape (N, C, h, w), '
                             f'but got shape {tuple(crops.shape)}')
        if not crops.is_floating_point():
            raise TypeError(f'{type(self).__name__} expects float pixel values in [0, 255], '
                            f'but got dtype {crops.dtype}')
        if self.crop_size is not None and tuple(crops.shape[-2:]) != self.crop_size:
            raise ValueError(f'{type(self).__name__} works on {self.crop_size} crops, but got crops of size '
                             f'{tuple(crops.shape[-2:])}; resize them to crop_size first')
        if crops.size(0) == 0:
            return crops.clone()
        return self.anonymize(crops)

    @abstractmethod
    def anonymize(self, crops: Tensor) -> Tensor:
        """Anonymize a non-empty batch of valid crops; see :meth:`forward` for the contract.

        Args:
            crops (Tensor): ``(N, C, h, w)`` float pixel values in [0, 255], N >= 1.

        Returns:
            Tensor: The anonymized crops, same shape, dtype and device, values in [0, 255].
        """


def relative_length(ratio: float, height: int, width: int, odd: bool = False) -> int:
    """A length in pixels given as a fraction of a crop's longer side, so that anonymizers treat a face region
    alike whatever its size in pixels.

    Args:
        ratio (float): The fraction of ``max(height, width)``.
        height (int): Crop height.
        width (int): Crop width.
        odd (bool): Round to the nearest odd length (kernels need a centre) instead of the nearest length.
            Defaults to False.

    Returns:
        int: The length, at least 1.
    """
    length = ratio * max(height, width)
    if odd:
        return max(1, 2 * math.floor((length - 1) / 2 + 0.5) + 1)
    return max(1, math.floor(length + 0.5))
