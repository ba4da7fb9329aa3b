from typing import Sequence

import numpy as np
import torch
from mmaction.structures import ActionDataSample
from mmcv.transforms import BaseTransform

from mmanon.registry import TRANSFORMS


@TRANSFORMS.register_module()
class PackFaceInputs(BaseTransform):
    """Pack an aligned face crop and its identity for :class:`mmanon.models.FaceIdentityClassifier`.

    The data sample is MMAction2's ``ActionDataSample``, whose ``gt_label`` / ``pred_score`` MMAction2's
    ``AccMetric`` reads, so identity classification is evaluated with the stock metric.

    Required keys: ``img`` ((H, W, 3) uint8). Optional: ``gt_label`` (int) and the ``meta_keys``.

    Args:
        meta_keys (Sequence[str]): Keys copied into the data sample's metainfo when present.
            Defaults to ('img_path', 'identity', 'ori_shape', 'img_shape', 'flip').
    """

    def __init__(self, meta_keys: Sequence[str] = ('img_path', 'identity', 'ori_shape', 'img_shape',
                                                  'flip')) -> None:
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        """Pack the crop and its identity.

        Args:
            results (dict): The pipeline's results.

        Returns:
            dict: ``inputs``, the (3, H, W) uint8 tensor, and ``data_samples``, an ``ActionDataSample`` with
            ``gt_label`` (LongTensor of shape (1,)) when the results carry one.
        """
        img = results['img']
        if img.ndim != 3 or img.dtype != np.uint8:
            raise ValueError(f'PackFaceInputs needs an (H, W, C) uint8 image, got shape {img.shape} {img.dtype} '
                             f'for {results.get("img_path", "the image")}')
        data_sample = ActionDataSample()
        if 'gt_label' in results:
            data_sample.set_gt_label(results['gt_label'])
        data_sample.set_metainfo({key: results[key] for key in self.meta_keys if key in results})
        return dict(inputs=torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), data_samples=data_sample)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(meta_keys={self.meta_keys})'
