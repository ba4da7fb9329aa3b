from typing import Optional

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmengine import fileio

from mmanon.registry import TRANSFORMS


class FaceImageError(OSError):
    """A face image is missing or cannot be decoded; the message names the file."""


def read_face_image(path: str, backend_args: Optional[dict] = None) -> np.ndarray:
    """Read a face image as RGB.

    RGB is the channel order in which MMAction2's decoders hand frames to the anonymizers and the
    discriminator, so face crops from still-image datasets and from videos look alike to them.

    Args:
        path (str): The image file.
        backend_args (dict, optional): Arguments of mmengine's file backend (for non-local storage).
            Defaults to None.

    Returns:
        np.ndarray: (H, W, 3) uint8 RGB image.

    Raises:
        FaceImageError: If the file does not exist or is not a decodable image.
    """
    try:
        data = fileio.get(path, backend_args=backend_args)
    except FileNotFoundError:
        raise FaceImageError(f'the face image {path} does not exist') from None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if img is None:
        raise FaceImageError(f'cannot decode the face image {path}: it is empty, corrupt or not an image')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@TRANSFORMS.register_module()
class LoadFaceImage(BaseTransform):
    """Load the face image ``results['img_path']`` as RGB uint8 into ``results['img']``.

    Unlike mmcv's ``LoadImageFromFile`` (BGR, an ``AssertionError`` on a bad file), the image comes in the
    channel order of video frames, and a missing or corrupt file raises :class:`FaceImageError` naming it,
    which :class:`mmanon.datasets.FaceIdentityDataset` can skip under ``on_bad_data='skip'``.

    Args:
        backend_args (dict, optional): Arguments of mmengine's file backend. Defaults to None.
    """

    def __init__(self, backend_args: Optional[dict] = None) -> None:
        self.backend_args = backend_args

    def transform(self, results: dict) -> dict:
        img = read_face_image(results['img_path'], self.backend_args)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(backend_args={self.backend_args})'
