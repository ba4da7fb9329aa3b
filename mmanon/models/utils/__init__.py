from .face_regions import (anonymize_crops, crop_regions, enlarge_regions, feather_mask, head_regions,
                           paste_regions, resize_crops)

__all__ = [
    'anonymize_crops', 'crop_regions', 'enlarge_regions', 'feather_mask', 'head_regions', 'paste_regions',
    'resize_crops'
]
