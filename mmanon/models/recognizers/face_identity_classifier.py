from typing import Dict, List, Optional, Union

import torch
from mmengine.model import BaseModel
from torch import Tensor

from mmanon.registry import MODELS, build_in_scope


@MODELS.register_module()
class FaceIdentityClassifier(BaseModel):
    """A :class:`FaceDiscriminatorHead` trained alone on identity classification, e.g. on CASIA-WebFace.

    It pre-trains the discriminator of the adversarial game (or an attacker) with ``tools/train.py``. Its
    checkpoint holds the head's weights under ``head.``, so an adversarial config loads them into its
    discriminator with ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='head.')``; a classifier of
    another ``num_classes`` loads all but ``fc_cls``.

    The data are the ``inputs`` / ``data_samples`` of :class:`mmanon.datasets.transforms.PackFaceInputs`:
    uint8 face crops, which the data preprocessor only stacks and turns into float [0, 255] pixels (the head
    normalises them itself, exactly as it does inside the adversarial game), and ``ActionDataSample`` s with
    ``gt_label``.

    Args:
        head (dict): Config of the :class:`FaceDiscriminatorHead`.
        data_preprocessor (dict, optional): Config of the data preprocessor. Defaults to None, meaning
            mmengine's ``ImgDataPreprocessor`` without normalisation or channel swap.
        init_cfg (dict | list[dict], optional): Initialisation config. Defaults to None.
    """

    def __init__(self, head: dict, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type='ImgDataPreprocessor')
        super().__init__(data_preprocessor=build_in_scope(MODELS, data_preprocessor), init_cfg=init_cfg)
        self.head = build_in_scope(MODELS, head)

    def forward(self, inputs: Tensor, data_samples: Optional[list] = None,
                mode: str = 'tensor') -> Union[Dict[str, Tensor], list, Tensor]:
        """Losses, predictions or embeddings of a batch of face crops.

        Args:
            inputs (Tensor): (N, C, H, W) float pixel values in [0, 255].
            data_samples (list[ActionDataSample], optional): The crops' samples; ``loss`` needs their
                ``gt_label``. Defaults to None.
            mode (str): ``'loss'``: the head's ``loss_identity`` and ``acc_identity``; ``'predict'``: the data
                samples with ``pred_score`` (identity probabilities) and ``pred_label`` added; ``'tensor'``:
                the (N, embed_dims) embeddings. Defaults to 'tensor'.

        Returns:
            dict[str, Tensor] | list[ActionDataSample] | Tensor: As ``mode`` says.
        """
        if mode == 'loss':
            labels = torch.cat([sample.gt_label for sample in data_samples]).to(inputs.device)
            return self.head.loss(inputs, labels)
        if mode == 'predict':
            _, scores = self.head.predict(inputs)
            for sample, score in zip(data_samples, scores):
                sample.set_pred_score(score)
                sample.set_pred_label(score.argmax())
            return data_samples
        if mode == 'tensor':
            return self.head(inputs)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")
