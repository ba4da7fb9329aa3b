from .face_regions import (anonymize_crops, consecutive_rows, crop_frames, crop_regions, enlarge_regions,
                           feather_mask, head_regions, paste_regions, resize_crops, to_uint8)
from .grad_utils import average_gradients, frozen_call, global_mean_scales
from .region_input_grad import RegionInputGrad, region_windows, windowed_conv_input_grad

__all__ = [
    'anonymize_crops', 'average_gradients', 'consecutive_rows', 'crop_frames', 'crop_regions', 'enlarge_regions',
    'feather_mask', 'frozen_call', 'global_mean_scales', 'head_regions', 'paste_regions', 'region_windows',
    'RegionInputGrad', 'resize_crops', 'to_uint8', 'windowed_conv_input_grad'
]
