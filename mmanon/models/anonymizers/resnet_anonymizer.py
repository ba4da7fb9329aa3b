from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from torch import Tensor

from mmanon.registry import MODELS
from .base_anonymizer import BaseAnonymizer

# Keeps atanh finite on black and white pixels (exactly -1 and 1 once mapped); small enough that the
# residual form at init changes them by about 1e-4 of a grey level.
ATANH_EPS = 1e-6

# Which taps of a 3-tap kernel fall on which of the 2 input pixels, for each of the 2 output phases of a nearest
# 2x upsampling followed by that kernel (see :func:`upsample_conv`): (phase, input pixel, tap).
_PHASE_TAPS = ((1., 0., 0.), (0., 1., 1.)), ((1., 1., 0.), (0., 0., 1.))


def upsample_conv(x: Tensor, conv: ConvModule) -> Tensor:
    """``conv(nn.Upsample(scale_factor=2, mode='nearest')(x))`` for a reflection-padded 3x3 ``ConvModule`` with
    stride 1, computed as a sub-pixel convolution of ``x`` itself.

    Each output pixel of the upsampled map is one of 4 phases (row and column even or odd), and each phase
    reads a 2x2 neighbourhood of ``x`` (the reflected border of the upsampled map is the replicated border of
    ``x``) with the sums of the 3x3 taps that fall on the same pixel. One convolution with 4 times the output
    channels and 2x2 kernels computes all phases, which are then interleaved: the same values (to float
    rounding: the same products, summed in another order), with 2.25 times fewer multiply-adds and no 4 times
    larger copy of ``x``, nor its padding. On the toy benchmark's CPU iteration this halves the cost of M's
    decoder convolutions (forward and backward passes).

    Args:
        x (Tensor): (N, C_in, h, w).
        conv (ConvModule): The convolution after the upsampling, with its norm and activation.

    Returns:
        Tensor: (N, C_out, 2h, 2w).
    """
    n, _, h, w = x.shape
    weight, bias = conv.conv.weight, conv.conv.bias
    out_channels = weight.shape[0]
    taps = weight.new_tensor(_PHASE_TAPS)
    # (row phase, column phase, C_out, C_in, 2, 2): the kernel of each phase.
    phase_weight = torch.einsum('apk,bql,oikl->aboipq', taps, taps, weight)
    phases = F.conv2d(F.pad(x, (1, 1, 1, 1), mode='replicate'), phase_weight.reshape(4 * out_channels, -1, 2, 2),
                      None if bias is None else bias.repeat(4))
    phases = phases.view(n, 2, 2, out_channels, h + 1, w + 1)
    # Phase (a, b) of output pixel (2i + a, 2j + b) was computed at (i + a, j + b).
    y = torch.stack([phases[:, a, b, :, a:a + h, b:b + w] for a in range(2) for b in range(2)], dim=-1)
    y = y.view(n, out_channels, h, w, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, out_channels, 2 * h, 2 * w)
    if conv.with_norm:
        y = conv.norm(y)
    return conv.activate(y) if conv.with_activation else y


def instance_norm(channels: int, affine: bool = True) -> dict:
    """Config of instance normalisation as ``GroupNorm(channels, channels)``: one group per channel normalises
    each channel of each sample over its pixels, exactly what ``InstanceNorm2d`` without running statistics
    does (to float rounding). It is no ``_NormBase`` subclass, which optimizer constructors that refuse batch
    normalisation anywhere in the model (mmaction2's layer-wise learning-rate decay, for VideoMAE) take
    instance norm for."""
    return dict(type='GN', num_groups=channels, affine=affine)


class ResidualBlock(nn.Module):
    """``x + f(x)`` where ``f`` is two reflection-padded 3x3 convolutions with instance norm, ReLU between.

    The first norm has affine parameters; the second has none, because a shift there would be removed by the
    next instance norm or merely duplicate the output convolution's bias: it would never receive a gradient.

    Args:
        channels (int): Input and output channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        conv = dict(kernel_size=3, padding=1, padding_mode='reflect')
        self.body = nn.Sequential(
            ConvModule(channels, channels, norm_cfg=instance_norm(channels), **conv),
            ConvModule(channels, channels, norm_cfg=instance_norm(channels, affine=False), act_cfg=None, **conv))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


@MODELS.register_module()
class ResNetAnonymizer(BaseAnonymizer):
    """The learned face modifier M of Ren et al., "Learning to Anonymize Faces for Privacy Preserving Action
    Detection" (ECCV 2018): a ResNet generator in the style of CycleGAN and pix2pix.

    The network maps pixels to [-1, 1] and runs a reflection-padded 7x7 convolution, ``num_downsamples``
    stride-2 3x3 convolutions that each double the channels, ``num_blocks`` residual blocks, as many nearest
    upsamplings each followed by a 3x3 convolution that halves the channels, and a reflection-padded 7x7
    convolution to ``in_channels`` whose output ``h`` is unbounded. All convolutions pad by reflection, and
    all but the last are followed by instance norm (with affine parameters where they can learn; see
    :func:`instance_norm`) and, but for the second of each residual block, ReLU.
    Each upsampling is computed together with the convolution after it (:func:`upsample_conv`: the same
    values, to float rounding, at less than half the cost); ``decoder`` keeps the ``nn.Upsample`` modules so that
    it describes the network and the weights keep their names.

    With ``residual=False`` the output is ``tanh(h)``, the paper's plain form. With ``residual=True`` it is
    ``tanh(atanh(x) + h)`` (``x`` clamped just inside (-1, 1)): the network learns a change to the face, and
    its last convolution starts at zero, so M starts as the identity (within 1e-3 of a grey level) and the
    action detector first sees the real faces. At that start the gradient reaches only the last convolution;
    the rest of the network receives gradient from the first update on. Either way the result is mapped
    back to [0, 255].

    Args:
        in_channels (int): Channels of the crops. Defaults to 3.
        base_channels (int): Channels after the first convolution; doubled by every downsampling.
            Defaults to 32.
        num_blocks (int): Number of residual blocks. Defaults to 6.
        num_downsamples (int): Number of stride-2 downsamplings (and of upsamplings). Defaults to 2.
        crop_size (Sequence[int]): ``(h, w)`` the crops are resized to; both must be divisible by
            ``2 ** num_downsamples`` and leave at least 2 pixels after downsampling. Defaults to (64, 64).
        residual (bool): Whether to learn a change of the input (see above) rather than the output itself.
            Defaults to True.
        init_cfg (dict or list[dict], optional): Initialization config. With ``residual=True`` the last
            convolution is zeroed again after it, unless it loads ``Pretrained`` weights. Defaults to None.
    """

    def __init__(self,
                 in_channels: int = 3,
                 base_channels: int = 32,
                 num_blocks: int = 6,
                 num_downsamples: int = 2,
                 crop_size: Sequence[int] = (64, 64),
                 residual: bool = True,
                 init_cfg: Optional[Union[dict, list]] = None) -> None:
        super().__init__(crop_size=crop_size, init_cfg=init_cfg)
        for name, value, minimum in (('in_channels', in_channels, 1), ('base_channels', base_channels, 1),
                                     ('num_blocks', num_blocks, 0), ('num_downsamples', num_downsamples, 0)):
            if not (isinstance(value, int) and value >= minimum):
                raise ValueError(f'{name} must be an int >= {minimum}, but got {value!r}')
        factor = 2**num_downsamples
        if any(size % factor for size in self.crop_size):
            raise ValueError(f'crop_size must be divisible by 2 ** num_downsamples = {factor}, '
                             f'but got {self.crop_size}')
        if min(self.crop_size) // factor < 2 or min(self.crop_size) < 4:
            raise ValueError(f'crop_size {self.crop_size} is too small: reflection padding needs at least 4 '
                             f'pixels, and at least 2 after {num_downsamples} downsamplings')
        self.residual = residual

        encoder = [
            ConvModule(in_channels, base_channels, kernel_size=7, padding=3, padding_mode='reflect',
                       norm_cfg=instance_norm(base_channels))
        ]
        for i in range(num_downsamples):
            channels = base_channels * 2**i
            encoder.append(
                ConvModule(channels, 2 * channels, kernel_size=3, stride=2, padding=1, padding_mode='reflect',
                           norm_cfg=instance_norm(2 * channels)))
        self.encoder = nn.Sequential(*encoder)
        self.blocks = nn.Sequential(*(ResidualBlock(base_channels * factor) for _ in range(num_blocks)))
        decoder = []
        for i in reversed(range(num_downsamples)):
            channels = base_channels * 2**(i + 1)
            decoder += [
                nn.Upsample(scale_factor=2, mode='nearest'),
                ConvModule(channels, channels // 2, kernel_size=3, padding=1, padding_mode='reflect',
                           norm_cfg=instance_norm(channels // 2))
            ]
        self.decoder = nn.Sequential(*decoder)
        self.output_conv = ConvModule(
            base_channels, in_channels, kernel_size=7, padding=3, padding_mode='reflect', act_cfg=None)
        if residual:
            self._zero_output_conv()

    def init_weights(self) -> None:
        """Initialize by ``init_cfg``, then zero the last convolution again in the residual form.

        ConvModule's own initialization and any Kaiming-like ``init_cfg`` would re-draw the last convolution
        and so lose the identity start; weights loaded as ``Pretrained`` are kept.
        """
        first_call = not self.is_init
        super().init_weights()
        init_cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        pretrained = any(cfg is not None and cfg.get('type') == 'Pretrained' for cfg in init_cfgs)
        if self.residual and first_call and not pretrained:
            self._zero_output_conv()

    @staticmethod
    def upgrade_state_dict_keys(state_dict: dict, prefix: str = '') -> None:
        """Rename, in place, the keys of an older layout of this network under ``prefix`` to the current ones:
        checkpoints written while the norms were InstanceNorm2d name them 'in' where GroupNorm is 'gn' (the
        parameters are the same). Loading applies it, and so does :func:`mmanon.utils.check_trained_keys`.

        Args:
            state_dict (dict): The weights.
            prefix (str): This network's key prefix in ``state_dict``. Defaults to ''.
        """
        for key in [k for k in state_dict if k.startswith(prefix) and '.in.' in k[len(prefix):]]:
            state_dict[prefix + key[len(prefix):].replace('.in.', '.gn.')] = state_dict.pop(key)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # Children load after their parent, so renaming here serves them all.
        self.upgrade_state_dict_keys(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _zero_output_conv(self) -> None:
        nn.init.zeros_(self.output_conv.conv.weight)
        nn.init.zeros_(self.output_conv.conv.bias)

    def anonymize(self, crops: Tensor) -> Tensor:
        x = crops / 127.5 - 1
        features = self.blocks(self.encoder(x))
        # Each upsampling with the convolution after it, as one sub-pixel convolution (see upsample_conv).
        for conv in self.decoder[1::2]:
            features = upsample_conv(features, conv)
        # The 7x7 convolution to 3 channels in channels-last layout: oneDNN's kernels for so few output channels
        # are about 30% faster so (forward and backward); its output comes back contiguous.
        h = self.output_conv(features.contiguous(memory_format=torch.channels_last)).contiguous()
        if self.residual:
            h = torch.atanh(x.clamp(-1 + ATANH_EPS, 1 - ATANH_EPS)) + h
        return (torch.tanh(h) + 1) * 127.5
