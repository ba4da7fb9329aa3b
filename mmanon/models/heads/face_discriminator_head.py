import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from mmanon.registry import MODELS

CLASSIFIERS = ('softmax', 'arcface')


class ResidualUnit(nn.Module):
    """Two 3x3 convolutions with PReLU and an identity shortcut, as in SphereFace's residual units.

    Args:
        channels (int): Input and output channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act1 = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act2 = nn.PReLU(channels)
        # Without normalisation layers, each unit would grow the activations' variance; starting the
        # residual branch at zero makes every unit an identity at first, so depth does not destabilise
        # early training.
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act2(self.conv2(self.act1(self.conv1(x))))


@MODELS.register_module()
class FaceDiscriminatorHead(BaseModule):
    """The face discriminator D: identity embeddings and identity logits of face crops.

    D tries to recognise the training identities from (anonymized) faces; the same architecture, trained
    separately, serves as a privacy attacker. The trunk is a small SphereFace-style CNN: each stage is a
    stride-2 3x3 convolution with PReLU followed by ``num_blocks`` residual units. It has no normalisation
    layers on purpose: D is also run, frozen, on anonymized crops in a separate pass, and batch statistics
    would couple that pass to the one on raw crops. The last feature map is flattened (faces are aligned
    crops, so position carries identity) and projected to the embedding.

    Args:
        num_classes (int): Number of training identities, at least 2.
        embed_dims (int): Size of the identity embedding. Defaults to 128.
        input_size (Sequence[int]): (height, width) the crops are resized to; each must be divisible by
            ``2 ** num_stages``. Defaults to (112, 96), SphereFace's face size.
        in_channels (int): Channels of the crops. Defaults to 3.
        base_channels (int): Channels of the first stage; each later stage doubles them. Defaults to 32.
        num_stages (int): Stages, each halving the resolution. Defaults to 4.
        num_blocks (int): Residual units per stage. Defaults to 1.
        classifier (str): 'softmax' for a plain linear classifier, or 'arcface' for cosine logits of
            L2-normalised embeddings and class weights with an additive angular margin on the target class.
            Defaults to 'softmax'.
        margin (float): ArcFace's angular margin in radians, in [0, pi/2). Defaults to 0.5.
        scale (float): ArcFace's logit scale. Defaults to 30.0.
        mean (Sequence[float]): Per-channel mean subtracted from the [0, 255] pixel values.
            Defaults to (127.5, 127.5, 127.5).
        std (Sequence[float]): Per-channel divisor applied after the mean. Defaults to (128.0, 128.0, 128.0).
        loss_weight (float): Factor of the identity cross-entropy. Defaults to 1.0.
        init_cfg (dict | list[dict], optional): Initialisation config of mmengine's ``BaseModule``.
            Defaults to None.
    """

    def __init__(self,
                 num_classes: int,
                 embed_dims: int = 128,
                 input_size: Sequence[int] = (112, 96),
                 in_channels: int = 3,
                 base_channels: int = 32,
                 num_stages: int = 4,
                 num_blocks: int = 1,
                 classifier: str = 'softmax',
                 margin: float = 0.5,
                 scale: float = 30.0,
                 mean: Sequence[float] = (127.5, 127.5, 127.5),
                 std: Sequence[float] = (128.0, 128.0, 128.0),
                 loss_weight: float = 1.0,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_classes < 2:
            raise ValueError(f'num_classes must be at least 2 identities, got {num_classes}')
        if classifier not in CLASSIFIERS:
            raise ValueError(f'classifier must be one of {CLASSIFIERS}, got {classifier!r}')
        if min(embed_dims, in_channels, base_channels, num_stages) < 1 or num_blocks < 0:
            raise ValueError('embed_dims, in_channels, base_channels and num_stages must be positive and '
                             f'num_blocks non-negative, got embed_dims={embed_dims}, in_channels={in_channels}, '
                             f'base_channels={base_channels}, num_stages={num_stages}, num_blocks={num_blocks}')
        input_size = tuple(input_size)
        stride = 2**num_stages
        if len(input_size) != 2 or any(s < stride or s % stride for s in input_size):
            raise ValueError(f'input_size must be (height, width), each a positive multiple of '
                             f'2 ** num_stages = {stride}, got {input_size}')
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f'mean and std need one value per channel (in_channels={in_channels}), '
                             f'got mean={tuple(mean)}, std={tuple(std)}')
        if any(s <= 0 for s in std):
            raise ValueError(f'std must be positive, got {tuple(std)}')
        if classifier == 'arcface' and not (0 <= margin < math.pi / 2 and scale > 0):
            raise ValueError(f'arcface needs 0 <= margin < pi/2 and scale > 0, got margin={margin}, '
                             f'scale={scale}')

        self.num_classes = num_classes
        self.embed_dims = embed_dims
        self.input_size = input_size
        self.in_channels = in_channels
        self.classifier = classifier
        self.margin = margin
        self.scale = scale
        self.loss_weight = loss_weight
        # Not persistent: they come from the config, so a state dict holds weights only.
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), False)

        layers = []
        channels = in_channels
        for i in range(num_stages):
            out_channels = base_channels * 2**i
            layers += [nn.Conv2d(channels, out_channels, 3, stride=2, padding=1), nn.PReLU(out_channels)]
            layers += [ResidualUnit(out_channels) for _ in range(num_blocks)]
            channels = out_channels
        self.trunk = nn.Sequential(*layers)
        feature_size = channels * (input_size[0] // stride) * (input_size[1] // stride)
        self.embed = nn.Linear(feature_size, embed_dims)
        if classifier == 'softmax':
            self.fc_cls = nn.Linear(embed_dims, num_classes)
        else:
            self.fc_cls = nn.Linear(embed_dims, num_classes, bias=False)

    def forward(self, crops: torch.Tensor,
                with_logits: bool = False) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Embed face crops.

        Args:
            crops (Tensor): (N, C, h, w) float pixel values in [0, 255], any h and w.
            with_logits (bool): Also return the margin-free logits, in the same call (so that a caller can
                run everything through one ``torch.func.functional_call``). Defaults to False.

        Returns:
            Tensor | tuple[Tensor, Tensor]: (N, embed_dims) identity embeddings, and with ``with_logits``
            the (N, num_classes) logits.
        """
        if crops.dim() != 4 or crops.shape[1] != self.in_channels:
            raise ValueError(f'crops must be (N, {self.in_channels}, h, w), got shape {tuple(crops.shape)}')
        crops = crops.float()
        if tuple(crops.shape[-2:]) != self.input_size:
            # Antialiasing keeps large crops from aliasing when shrunk; it is differentiable like plain
            # bilinear resizing, so the anonymizer still gets gradients through it.
            crops = F.interpolate(crops, size=self.input_size, mode='bilinear', align_corners=False,
                                  antialias=True)
        x = self.trunk((crops - self.mean) / self.std)
        embeddings = self.embed(x.flatten(1))
        return (embeddings, self.logits(embeddings)) if with_logits else embeddings

    def logits(self, embeddings: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Identity logits of embeddings.

        Args:
            embeddings (Tensor): (N, embed_dims) embeddings from :meth:`forward`.
            labels (Tensor, optional): (N,) identity labels, negative for unknown. With the 'arcface'
                classifier, the angular margin is added to each known sample's target logit; without
                labels (inference) the logits are margin-free. Defaults to None.

        Returns:
            Tensor: (N, num_classes) logits.
        """
        if self.classifier == 'softmax':
            return self.fc_cls(embeddings)
        cosine = F.linear(F.normalize(embeddings, dim=1), F.normalize(self.fc_cls.weight, dim=1))
        if labels is not None:
            cosine = self._add_angular_margin(cosine, labels)
        return self.scale * cosine

    def _add_angular_margin(self, cosine: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Replace cos(theta) of each known target class by cos(theta + margin).

        Past theta = pi - margin, cos(theta + margin) would rise again and reward a worse angle; there the
        target continues as cos(theta) - (1 - cos(margin)), which meets cos(theta + margin) = -1 at that point
        and keeps decreasing, so the target logit is monotonic in the angle with a gradient everywhere.
        """
        known = labels >= 0
        rows = known.nonzero(as_tuple=True)[0]
        target = cosine[rows, labels[rows]]
        # Clamped away from 0 so that the square root keeps a finite gradient at cos(theta) = +-1.
        sine = (1 - target.square()).clamp(min=1e-12).sqrt()
        cos_m, sin_m = math.cos(self.margin), math.sin(self.margin)
        with_margin = torch.where(target >= -cos_m, target * cos_m - sine * sin_m, target - (1 - cos_m))
        cosine = cosine.clone()
        cosine[rows, labels[rows]] = with_margin
        return cosine

    def loss(self, crops: Union[torch.Tensor, Sequence[torch.Tensor]],
             labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Identity classification loss and accuracy.

        Several groups of crops of the same faces (raw and anonymized, say) can share one forward pass: D has
        no normalisation layers, so each crop's logits do not depend on the rest of its batch, and one pass
        over all groups costs fewer, larger operations than one per group.

        Args:
            crops (Tensor | Sequence[Tensor]): (N, C, h, w) float pixel values in [0, 255]; N may be 0. Or
                a sequence of G such groups, each of N crops labelled by ``labels``, all of one size.
            labels (Tensor): (N,) identity labels in [0, num_classes); negative labels mark unknown
                identities, which count in neither loss nor accuracy.

        Returns:
            dict[str, Tensor]: ``loss_identity``, the cross-entropy over known samples times ``loss_weight``
            (for groups, the sum of each group's; a zero still connected to every parameter when there are no
            known samples, so callers can always backward), and ``acc_identity``, the top-1 accuracy of the
            margin-free logits in [0, 1] (0 when no sample is known), without grad; for groups, a (G,) tensor
            of each group's accuracy.
        """
        grouped = not isinstance(crops, torch.Tensor)
        groups = list(crops) if grouped else [crops]
        if not groups:
            raise ValueError('crops must be a tensor or a non-empty sequence of tensors, got an empty sequence')
        labels = labels.to(device=groups[0].device, dtype=torch.long)
        for group in groups:
            if labels.shape != group.shape[:1]:
                raise ValueError(f'labels must be ({group.shape[0]},) for {group.shape[0]} crops, '
                                 f'got shape {tuple(labels.shape)}')
        if (labels >= self.num_classes).any():
            raise ValueError(f'labels must be below num_classes={self.num_classes}, got {labels.max().item()}')
        embeddings = self(torch.cat(groups) if grouped else crops)
        logits = self.logits(embeddings)
        known = labels >= 0
        if not known.any():
            accuracy = logits.new_zeros((len(groups), )) if grouped else logits.new_zeros(())
            return dict(loss_identity=logits.sum() * 0, acc_identity=accuracy)
        if self.classifier == 'arcface':
            train_logits = self.logits(embeddings, labels.repeat(len(groups)))
        else:
            train_logits = logits
        # Each group's mean, as a separate call per group would give.
        losses, accuracies = [], []
        for group_logits, group_train_logits in zip(logits.detach().chunk(len(groups)),
                                                    train_logits.chunk(len(groups))):
            losses.append(F.cross_entropy(group_train_logits[known], labels[known]) * self.loss_weight)
            accuracies.append((group_logits[known].argmax(dim=1) == labels[known]).float().mean())
        if not grouped:
            return dict(loss_identity=losses[0], acc_identity=accuracies[0])
        return dict(loss_identity=sum(losses[1:], losses[0]), acc_identity=torch.stack(accuracies))

    def predict(self, crops: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and identity probabilities of face crops (margin-free).

        Args:
            crops (Tensor): (N, C, h, w) float pixel values in [0, 255].

        Returns:
            tuple[Tensor, Tensor]: (N, embed_dims) embeddings and (N, num_classes) softmax probabilities.
        """
        embeddings = self(crops)
        return embeddings, self.logits(embeddings).softmax(dim=1)
