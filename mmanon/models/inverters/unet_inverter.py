from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import Tensor

from mmanon.registry import MODELS


@MODELS.register_module()
class UNetInverter(BaseModule):
    """The network of the inversion attacker: a small U-Net that maps anonymized face crops back to raw ones.

    Many anonymizers can be partly undone by a network trained on pairs of anonymized and raw faces (blur and
    pixelation leave the coarse face in place); ``tools/analysis/train_inverter.py`` trains this one, and
    :class:`mmanon.evaluation.attackers.InvertedAttacker` re-identifies the faces it restores. Pixels are mapped
    to [-1, 1]; each of ``num_stages + 1`` levels has two 3x3 convolutions with batch norm and ReLU, the levels
    are joined by stride-2 convolutions on the way down and nearest upsampling on the way up, where each level
    is concatenated with the encoder's features of the same size (the U-Net's skips, which carry the detail
    an anonymizer left). A 1x1 convolution and ``tanh`` give the output, mapped back to [0, 255].

    Args:
        in_channels (int): Channels of the crops. Defaults to 3.
        base_channels (int): Channels of the first level; each level below doubles them. Defaults to 16.
        num_stages (int): Levels below the first, each halving the size. Defaults to 2.
        crop_size (Sequence[int]): ``(h, w)`` of the crops it works on; both divisible by ``2 ** num_stages``.
            Defaults to (32, 32).
        init_cfg (dict | list[dict], optional): Initialisation config of mmengine's ``BaseModule``.
            Defaults to None.
    """

    def __init__(self,
                 in_channels: int = 3,
                 base_channels: int = 16,
                 num_stages: int = 2,
                 crop_size: Sequence[int] = (32, 32),
                 init_cfg: Optional[Union[dict, list]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if min(in_channels, base_channels) < 1 or num_stages < 0:
            raise ValueError(f'in_channels and base_channels must be positive and num_stages non-negative, got '
                             f'in_channels={in_channels}, base_channels={base_channels}, num_stages={num_stages}')
        crop_size = tuple(crop_size)
        factor = 2**num_stages
        if len(crop_size) != 2 or any(s < factor or s % factor for s in crop_size):
            raise ValueError(f'crop_size must be (h, w), each a positive multiple of 2 ** num_stages = {factor}, '
                             f'got {crop_size}')
        self.in_channels = in_channels
        self.crop_size = crop_size
        conv = dict(kernel_size=3, padding=1, norm_cfg=dict(type='BN'))

        def level(inputs: int, outputs: int, stride: int = 1) -> nn.Sequential:
            return nn.Sequential(
                ConvModule(inputs, outputs, stride=stride, **conv), ConvModule(outputs, outputs, **conv))

        channels = [base_channels * 2**i for i in range(num_stages + 1)]
        self.encoder = nn.ModuleList([level(in_channels, channels[0])] +
                                     [level(channels[i], channels[i + 1], stride=2) for i in range(num_stages)])
        self.upsample = nn.Upsample(scale_factor=2, mode='nearest')
        self.decoder = nn.ModuleList([level(channels[i + 1] + channels[i], channels[i]) for i in range(num_stages)])
        self.output_conv = nn.Conv2d(channels[0], in_channels, kernel_size=1)

    def forward(self, crops: Tensor) -> Tensor:
        """Restore face crops.

        Args:
            crops (Tensor): (N, C, h, w) anonymized crops, float pixel values in [0, 255], of ``crop_size``.

        Returns:
            Tensor: (N, C, h, w) float pixel values in [0, 255].
        """
        if crops.dim() != 4 or crops.shape[1] != self.in_channels or tuple(crops.shape[-2:]) != self.crop_size:
            raise ValueError(f'crops must be (N, {self.in_channels}, {self.crop_size[0]}, {self.crop_size[1]}), got '
                             f'shape {tuple(crops.shape)}; resize them to crop_size first')
        x = crops.float() / 127.5 - 1
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        for i in reversed(range(len(self.decoder))):
            x = self.decoder[i](torch.cat([self.upsample(x), skips[i]], dim=1))
        return (torch.tanh(self.output_conv(x)) + 1) * 127.5
