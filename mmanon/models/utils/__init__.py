from .face_regions import (anonymize_crops, crop_regions, enlarge_regions, feather_mask, head_regions,
                           paste_regions, resize_crops, to_uint8)
from .grad_utils import attach_loss, frozen_call

__all__ = [
    'anonymize_crops', 'attach_loss', 'crop_regions', 'enlarge_regions', 'feather_mask', 'frozen_call',
    'head_regions', 'paste_regions', 'resize_crops', 'to_uint8'
]
