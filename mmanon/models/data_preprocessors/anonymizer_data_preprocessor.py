import logging
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmaction.models import ActionDataPreprocessor
from mmaction.utils import SampleList
from mmengine.logging import print_log
from mmengine.structures import InstanceData
from torch import Tensor

from mmanon.registry import MODELS, build_in_scope
from ..utils import (anonymize_crops, consecutive_rows, crop_frames, crop_regions, enlarge_regions, frozen_call,
                     global_mean_scales, head_regions, paste_regions, resize_crops, to_uint8)


class FaceBatch:
    """The identity-labelled faces of one batch, as the discriminator and the metrics see them.

    Args:
        raw (Tensor): (F, C, h, w) crops of the raw clips' key frames, pixel values.
        anonymized (Tensor): (F, C, h, w) crops of the same regions of the anonymized clips.
        identities (Tensor): (F,) identity labels, -1 where unknown.
        sample_inds (Tensor): (F,) the clip each face belongs to.
    """

    def __init__(self, raw: Tensor, anonymized: Tensor, identities: Tensor, sample_inds: Tensor) -> None:
        self.raw = raw
        self.anonymized = anonymized
        self.identities = identities
        self.sample_inds = sample_inds

    def __len__(self) -> int:
        return self.identities.numel()

    def detach(self) -> 'FaceBatch':
        return FaceBatch(self.raw.detach(), self.anonymized.detach(), self.identities, self.sample_inds)


@MODELS.register_module()
class AnonymizerDataPreprocessor(ActionDataPreprocessor):
    """MMAction2's data preprocessor with every face of every clip anonymized first.

    A drop-in replacement for a stock spatio-temporal detector's ``model.data_preprocessor``: the detector
    only ever receives anonymized clips, in training, validation and test. The stock preprocessing runs
    first; then each face region is cut from the raw pixels, anonymized in pixel space, normalized with the
    stock operations and blended back. Pixels outside every face region are therefore bit-identical to the
    stock preprocessor's output (and so is a face left unchanged, by the identity anonymizer).

    Face regions of a clip, in this order of preference: the face tubes the data sample carries
    (``face_tubes.bboxes``, one box per face and frame, see :class:`mmanon.datasets.AVAFaceDataset`), so
    that each frame is anonymized where its face is; otherwise the keyframe's face boxes (``gt_faces``), or
    the top ``head_ratio`` of each person box (ground-truth boxes in training, proposals at test time, as the
    detector sees them), in all T frames. Each box is enlarged by ``margin`` and clipped to the frame; all
    frames of a face get a region of the same size, centred on that frame's box, so the anonymizer sees the
    face at one scale all through the clip (see :func:`mmanon.models.utils.enlarge_regions`). Faces with no
    region left in any frame after clipping are skipped and counted.

    For the discriminator and the privacy metrics, the identity-labelled faces (``gt_faces``, else the heads
    of the ground-truth persons with ``gt_instances.identities``) are cut from the key frame of the raw and of
    the anonymized clip. In training they are kept in :attr:`train_faces` for
    :class:`mmanon.engine.hooks.AdversarialTrainingHook`; in validation and test they are attached to each
    data sample as ``faces`` (``identities``, ``raw_crops``, ``anonymized_crops`` as uint8 and, with a
    discriminator, its ``raw_embeddings`` and ``anonymized_embeddings``) for
    :class:`mmanon.evaluation.FacePrivacyMetric`.

    In training, a preprocessor with trainable parameters (a learned anonymizer M, a discriminator D) and an
    objective of its own (a discriminator, ``l1_weight`` > 0 or ``temporal_weight`` > 0) also produces M's
    losses, weighted: ``loss_adv``, ``adversarial_weight`` times the adversarial loss against the (frozen)
    discriminator; ``loss_l1``, ``l1_weight`` times the mean absolute change of the face pixels (in [0, 1]
    units); and ``loss_temporal``, ``temporal_weight`` times the mean, over the pixels of every pair of
    consecutive frames of a face region, of how much more the anonymized pixel changes from one frame to the
    next than the raw pixel does (in [0, 1] units; see :meth:`anonymizer_losses`). Each is a mean over every
    face (face pixel, pair of pixels) of the global batch, across ranks.
    :class:`mmanon.engine.hooks.AdversarialTrainingHook` adds them to the loss dict of the detector's
    ``loss()``, so the optimizer wrapper scales, accumulates and logs them like the detection losses; losses
    that no one consumed stop the next training step with an error (see :meth:`pop_losses`). The hook also
    schedules the adversarial weight. The regions pasted in the last training step, the only pixels of the
    clips whose gradient reaches M, are kept in :attr:`pasted_regions` (sample indices and regions, as
    :func:`mmanon.models.utils.paste_regions` takes them) for :class:`mmanon.models.utils.RegionInputGrad`.

    Args:
        anonymizer (dict): Config of the anonymizer (see ``mmanon.models.anonymizers``).
            Defaults to ``dict(type='IdentityAnonymizer')``.
        discriminator (dict, optional): Config of a :class:`FaceDiscriminatorHead`, for adversarial training
            and as the co-trained attacker. Defaults to None.
        margin (float): Scale of face boxes into anonymized regions (the paper enlarges faces about 2x).
            Defaults to 2.0.
        feather (float): Width of the blending ramp at a region's border, as a fraction of its size (see
            :func:`mmanon.models.utils.feather_mask`). Defaults to 0.2.
        head_ratio (float): The top fraction of a person box taken as its head when no face box is given.
            Defaults to 0.25.
        face_crop_size (Sequence[int]): (h, w) of the face crops handed to the discriminator and the metrics.
            Defaults to (64, 64).
        face_crop_margin (float): Scale of face boxes into those crops. Defaults to 1.0.
        adversarial_loss (str): How the anonymizer fights the discriminator: ``'negative_ce'`` maximises the
            discriminator's identity cross-entropy on anonymized faces (capped at ``ce_cap``, beyond which the
            face counts as fooled); ``'embedding'`` minimises the cosine similarity of the anonymized face's
            embedding to the raw face's; ``'uniform'`` (maximum entropy) minimises the cross-entropy of the
            discriminator's identity posterior against the uniform distribution, so that the face tells it
            nothing, rather than something wrong (a wrong but consistent answer is still an identity, which an
            attacker retrained on anonymized faces learns back). Defaults to 'negative_ce'.
        ce_cap (float, optional): Cap of the cross-entropy for ``'negative_ce'``. Defaults to None (no cap).
        adversarial_weight (float): Initial weight of the adversarial loss; the hook schedules it.
            Defaults to 0.
        l1_weight (float): Weight of the L1 term. Defaults to 0.
        temporal_weight (float): Weight of the temporal consistency term ``loss_temporal``. Defaults to 0.
        freeze_anonymizer (bool): Whether the anonymizer's parameters are fixed (``requires_grad`` off), as
            for a learned anonymizer trained before and applied like a handcrafted one: then no optimizer
            holds them, whatever its constructor. Defaults to False.
        **kwargs: The arguments of :class:`ActionDataPreprocessor` (``mean``, ``std``, ``to_rgb``,
            ``format_shape`` which must be ``'NCTHW'``, ...).
    """

    def __init__(self,
                 anonymizer: dict = dict(type='IdentityAnonymizer'),
                 discriminator: Optional[dict] = None,
                 margin: float = 2.0,
                 feather: float = 0.2,
                 head_ratio: float = 0.25,
                 face_crop_size: Sequence[int] = (64, 64),
                 face_crop_margin: float = 1.0,
                 adversarial_loss: str = 'negative_ce',
                 ce_cap: Optional[float] = None,
                 adversarial_weight: float = 0.,
                 l1_weight: float = 0.,
                 temporal_weight: float = 0.,
                 freeze_anonymizer: bool = False,
                 **kwargs) -> None:
        kwargs.setdefault('format_shape', 'NCTHW')
        if kwargs['format_shape'] != 'NCTHW':
            raise ValueError(f'AnonymizerDataPreprocessor anonymizes clips and needs format_shape="NCTHW", '
                             f'got {kwargs["format_shape"]!r}')
        if margin < 1:
            raise ValueError(f'margin must be >= 1 (regions cover at least the face), got {margin}')
        if not 0 <= feather <= 0.5:
            raise ValueError(f'feather must be in [0, 0.5], got {feather}')
        if not 0 < head_ratio <= 1:
            raise ValueError(f'head_ratio must be in (0, 1], got {head_ratio}')
        if temporal_weight < 0:
            raise ValueError(f'temporal_weight must be >= 0, got {temporal_weight}')
        if adversarial_loss not in ('negative_ce', 'embedding', 'uniform'):
            raise ValueError(f"adversarial_loss must be 'negative_ce', 'embedding' or 'uniform', got "
                             f'{adversarial_loss!r}')
        if kwargs.get('blending') is not None:
            raise ValueError('AnonymizerDataPreprocessor does not support batch blending: blended clips would mix '
                             'anonymized and raw faces of different clips')
        super().__init__(**kwargs)
        self.anonymizer = build_in_scope(MODELS, anonymizer)
        if freeze_anonymizer:
            self.anonymizer.requires_grad_(False)
        self.discriminator = None if discriminator is None else build_in_scope(MODELS, discriminator)
        self.margin = margin
        self.feather = feather
        self.head_ratio = head_ratio
        self.face_crop_size = tuple(face_crop_size)
        self.face_crop_margin = face_crop_margin
        self.adversarial_loss = adversarial_loss
        self.ce_cap = ce_cap
        self.adversarial_weight = adversarial_weight
        self.l1_weight = l1_weight
        self.temporal_weight = temporal_weight
        self.train_faces: Optional[FaceBatch] = None
        self.pasted_regions: Optional[Tuple[Tensor, Tensor]] = None
        self._pending_losses: Optional[Dict[str, Tensor]] = None
        self.skipped_regions = 0

    def preprocess(self, inputs: List[Tensor], data_samples: SampleList, training: bool = False) -> Tuple:
        # The stock preprocessing first, then the face regions are replaced: everything outside them is the
        # stock output itself, and no whole-batch copy is made beyond the stock one.
        clips, data_samples = super().preprocess(inputs, data_samples, training)
        return self.anonymize(inputs, clips, data_samples, training), data_samples

    def anonymize(self, inputs: Sequence[Tensor], clips: Tensor, data_samples: SampleList,
                  training: bool) -> Tensor:
        """Anonymize the face regions of a batch of clips.

        Args:
            inputs (Sequence[Tensor]): The raw clips (C, T, H, W), pixel values, as the dataloader gave them.
            clips (Tensor): (N, C, T, H, W), the same clips after the stock preprocessing; their face regions
                are replaced in place.
            data_samples (list[ActionDataSample]): The batch's data samples.
            training (bool): Whether this is a training step (regions from ground-truth persons, faces kept
                for the hook, the anonymizer's own losses kept for :meth:`pop_losses`) or an evaluation step
                (regions from proposals, faces attached to the data samples).

        Returns:
            Tensor: The anonymized clips.
        """
        num_frames, height, width = clips.shape[-3:]
        inds, tubes = self._region_boxes(data_samples, training, num_frames, clips.device)
        regions, valid = enlarge_regions(tubes, self.margin, height, width)
        usable = valid.any(dim=1)
        self._count_skipped(int((~usable).sum()))
        inds, regions = inds[usable], regions[usable]
        crops = [crop.float() for crop in crop_regions(inputs, inds, regions)]
        patches = anonymize_crops(self.anonymizer, crops)
        paste_regions(clips, inds, regions, [self._normalize(p) for p in patches], self.feather)
        self.pasted_regions = (inds, regions) if training else None

        faces = self._identity_faces(inputs, clips, data_samples)
        if training:
            self._keep_train_losses(faces, crops, patches, crop_frames(regions, num_frames))
            self.train_faces = faces.detach()
        else:
            self._attach_faces(faces, data_samples)
        return clips

    def _normalize(self, crops: Tensor) -> Tensor:
        """Pixel crops (T, C, h, w) as the stock preprocessing turns the clips' pixels (same operations, so
        an unchanged pixel comes out bit-identical)."""
        clip = crops.transpose(0, 1)
        if self.to_rgb:
            clip = clip[[2, 1, 0]]
        if self._enable_normalize:
            clip = (clip - self.mean) / self.std
        return clip.transpose(0, 1)

    def _denormalize(self, crops: Tensor) -> Tensor:
        """The inverse of :meth:`_normalize`: preprocessed crops (T, C, h, w) back to pixels."""
        clip = crops.transpose(0, 1)
        if self._enable_normalize:
            clip = clip * self.std + self.mean
        if self.to_rgb:
            clip = clip[[2, 1, 0]]
        return clip.transpose(0, 1)

    def _region_boxes(self, data_samples: SampleList, training: bool, num_frames: int,
                      device) -> Tuple[Tensor, Tensor]:
        """(K,) sample indices and (K, T, 4) face tubes to anonymize, NaN where a face has no box."""
        inds, tubes = [], []
        for n, sample in enumerate(data_samples):
            if 'face_tubes' in sample:
                sample_tubes = sample.face_tubes.bboxes
                if sample_tubes.dim() != 3 or sample_tubes.shape[1:] != (num_frames, 4):
                    raise ValueError(f'face_tubes.bboxes must have shape (K, {num_frames}, 4), one box per face '
                                     f'and frame of the clip, but got {tuple(sample_tubes.shape)}')
            else:
                if 'gt_faces' in sample:
                    sample_boxes = sample.gt_faces.bboxes
                else:
                    persons = sample.gt_instances if training else sample.get('proposals')
                    if persons is None or 'bboxes' not in persons:
                        raise ValueError('a data sample carries neither face boxes (face_tubes, gt_faces) nor '
                                         f'{"ground-truth person boxes" if training else "proposals"} to '
                                         'derive head regions from; the preprocessor cannot tell where faces '
                                         'are')
                    sample_boxes = head_regions(persons.bboxes, self.head_ratio)
                sample_tubes = sample_boxes.reshape(-1, 1, 4).expand(-1, num_frames, -1)
            tubes.append(sample_tubes.to(device).float())
            inds.append(torch.full((tubes[-1].shape[0], ), n, dtype=torch.long, device=device))
        return torch.cat(inds), torch.cat(tubes)

    def _labelled_boxes(self, data_samples: SampleList, device) -> Tuple[Tensor, Tensor, Tensor]:
        """(F,) sample indices, (F, 4) face boxes and (F,) identities of the faces whose identity is known."""
        inds, boxes, identities = [], [], []
        for n, sample in enumerate(data_samples):
            if 'gt_faces' in sample:
                sample_boxes, sample_ids = sample.gt_faces.bboxes, sample.gt_faces.identities
            elif 'gt_instances' in sample and 'identities' in sample.gt_instances:
                persons = sample.gt_instances
                sample_boxes, sample_ids = head_regions(persons.bboxes, self.head_ratio), persons.identities
            else:
                continue
            keep = sample_ids >= 0
            boxes.append(sample_boxes[keep].to(device).float().reshape(-1, 4))
            identities.append(sample_ids[keep].to(device).long())
            inds.append(torch.full((boxes[-1].shape[0], ), n, dtype=torch.long, device=device))
        if not boxes:
            empty = torch.zeros(0, dtype=torch.long, device=device)
            return empty, torch.zeros(0, 4, device=device), empty
        return torch.cat(inds), torch.cat(boxes), torch.cat(identities)

    def init_weights(self) -> None:
        """Initialise the anonymizer and the discriminator by their ``init_cfg`` (a pre-trained D, say): the
        detector's ``init_weights`` descends only into children that have one, and this preprocessor, as
        MMAction2's, is a plain module."""
        for module in (self.anonymizer, self.discriminator):
            if module is not None:
                module.init_weights()

    def _identity_faces(self, inputs: Sequence[Tensor], clips: Tensor, data_samples: SampleList) -> FaceBatch:
        """Crop the identity-labelled faces from the key frame of the raw and of the anonymized clips."""
        height, width = clips.shape[-2:]
        inds, boxes, identities = self._labelled_boxes(data_samples, clips.device)
        regions, valid = enlarge_regions(boxes, self.face_crop_margin, height, width)
        inds, regions, identities = inds[valid], regions[valid], identities[valid]
        key = clips.shape[2] // 2  # SampleAVAFrames centres the clip on the keyframe

        def key_crops(frames: Union[Tensor, Sequence[Tensor]]) -> Tensor:
            crops = crop_regions(frames, inds, regions)
            if not crops:
                return clips.new_zeros((0, clips.shape[1], *self.face_crop_size))
            return torch.cat([resize_crops(c, self.face_crop_size) for c in crops])

        # Whole key frames to pixels, once: the same elementwise operations as on each crop, in a few calls.
        raw = [clip[:, key:key + 1].float() for clip in inputs]
        anonymized = self._denormalize(clips[:, :, key]).unsqueeze(2)
        return FaceBatch(key_crops(raw), key_crops(anonymized), identities, inds)

    def _keep_train_losses(self, faces: FaceBatch, crops: List[Tensor], patches: List[Tensor],
                           frames: List[Tensor]) -> None:
        """Keep M's losses of this training step for :meth:`pop_losses`, after checking that those of the
        previous step were consumed."""
        if self._pending_losses is not None:
            raise RuntimeError(
                f'the losses {sorted(self._pending_losses)} that AnonymizerDataPreprocessor produced in the '
                'previous training step were not consumed, so they never reached an optimizer: add '
                'dict(type=\'mmanon.AdversarialTrainingHook\') to custom_hooks, which trains the anonymizer and '
                'the discriminator')
        params = [p for p in self.parameters() if p.requires_grad]
        if not params or (self.discriminator is None and self.l1_weight == 0 and self.temporal_weight == 0):
            return
        losses = self.anonymizer_losses(faces, crops, patches, frames)
        # A zero that depends on every trainable parameter of M and D: the detector's backward pass then
        # reaches all of them in every iteration (with zero gradients where nothing else does), so DDP sees
        # the same parameters used on every rank, with or without faces in its batch. One concatenation
        # rather than a sum per parameter: three operations in all, not two per parameter.
        name = next(iter(losses))
        losses[name] = losses[name] + torch.cat([p.reshape(-1) for p in params]).sum() * 0
        self._pending_losses = losses

    def pop_losses(self) -> Dict[str, Tensor]:
        """Hand over the losses of the last training step, once: ``loss_adv`` (with a discriminator),
        ``loss_l1`` (with ``l1_weight`` > 0) and ``loss_temporal`` (with ``temporal_weight`` > 0); empty without
        trainable parameters.

        Whoever calls this must make the losses reach the optimizer (the adversarial hook adds them to the
        detector's loss dict); the next training step raises an error if they were not taken.

        Returns:
            dict[str, Tensor]: The losses, with gradient.
        """
        losses, self._pending_losses = self._pending_losses, None
        return losses or {}

    def anonymizer_losses(self,
                          faces: FaceBatch,
                          crops: List[Tensor],
                          patches: List[Tensor],
                          frames: Optional[List[Tensor]] = None) -> Dict[str, Tensor]:
        """M's own training terms, each a mean over all ranks' faces (or face pixels, or pairs of them).

        Each rank returns its sum scaled by :func:`mmanon.models.utils.global_mean_scales`, so that averaging
        the gradients over the ranks (as DDP does) gives the gradient of the mean over every face of the
        global batch, however the faces are spread over the ranks. Every rank must call this.

        The temporal term compares, for each pair of consecutive frames t-1, t of a face region (rows of a crop
        whose ``frames`` differ by 1; a tube's frames whose region is clipped to another size are in another
        crop, and pairs across a gap are not consecutive) and each pixel of the region's crop coordinates, the
        anonymized change with the raw one: ``max(0, |M(x)_t - M(x)_t-1| - |x_t - x_t-1|)``. It is zero for
        any anonymizer that changes no more than the face does (the identity, a constant fill, a smoothing, a
        fixed pattern added), so it asks nothing of privacy, only that M adds no flicker: the mean anonymized
        change along the tubes is at most the mean raw change plus ``loss_temporal / temporal_weight`` (both in
        [0, 1] units).

        Args:
            faces (FaceBatch): The identity-labelled faces, anonymized crops with gradient.
            crops (list[Tensor]): The raw pixel crops (T', C, h, w) the anonymizer was given.
            patches (list[Tensor]): What it returned for them.
            frames (list[Tensor], optional): The clip frame of each row of each crop (see
                :func:`mmanon.models.utils.crop_frames`). Defaults to None: the crops are single images (a
                face-identity dataset's), with no consecutive frames.

        Returns:
            dict[str, Tensor]: ``loss_adv`` (with a discriminator; zero while ``adversarial_weight`` is 0),
            ``loss_l1`` (with ``l1_weight`` > 0) and ``loss_temporal`` (with ``temporal_weight`` > 0).
        """
        device = faces.raw.device
        excess, pair_pixels = torch.zeros((), device=device), 0
        if self.temporal_weight > 0:
            for crop, patch, crop_frame in zip(crops, patches, frames or ()):
                prev = consecutive_rows(crop_frame).to(patch.device)
                anonymized_change = (patch[prev + 1] - patch[prev]).abs()
                raw_change = (crop[prev + 1] - crop[prev]).abs()
                excess = excess + F.relu(anonymized_change - raw_change).sum()
                pair_pixels += anonymized_change.numel()
        face_scale, pixel_scale, pair_scale = global_mean_scales(
            len(faces), sum(p.numel() for p in patches), pair_pixels, device=device)
        losses = {}
        if self.discriminator is not None:
            if self.adversarial_weight > 0 and len(faces) > 0:
                adversarial = self._adversarial_loss(faces).sum()
            else:
                adversarial = torch.zeros((), device=device)
            losses['loss_adv'] = self.adversarial_weight * adversarial * face_scale
        if self.l1_weight > 0:
            change = sum(((p - c).abs().sum() for p, c in zip(patches, crops)), torch.zeros((), device=device))
            losses['loss_l1'] = self.l1_weight * change * pixel_scale / 255
        if self.temporal_weight > 0:
            losses['loss_temporal'] = self.temporal_weight * excess * pair_scale / 255
        return losses

    def _adversarial_loss(self, faces: FaceBatch) -> Tensor:
        """(F,) what the anonymizer minimises for each face to fool the discriminator, which is frozen for
        this pass."""
        anonymized, logits = frozen_call(self.discriminator, faces.anonymized, with_logits=True)
        if self.adversarial_loss == 'embedding':
            raw = frozen_call(self.discriminator, faces.raw).detach()
            return F.cosine_similarity(anonymized, raw, dim=1)
        if self.adversarial_loss == 'uniform':
            return -F.log_softmax(logits, dim=1).mean(dim=1)
        ce = F.cross_entropy(logits, faces.identities, reduction='none')
        if self.ce_cap is not None:
            ce = ce.clamp(max=self.ce_cap)
        return -ce

    @torch.no_grad()
    def _attach_faces(self, faces: FaceBatch, data_samples: SampleList) -> None:
        """Give each data sample its faces, for the privacy metrics."""
        fields = dict(
            identities=faces.identities,
            raw_crops=to_uint8(faces.raw),
            anonymized_crops=to_uint8(faces.anonymized))
        if self.discriminator is not None and len(faces):
            fields['raw_embeddings'] = self.discriminator(faces.raw)
            fields['anonymized_embeddings'] = self.discriminator(faces.anonymized)
        for n, sample in enumerate(data_samples):
            keep = faces.sample_inds == n
            sample.faces = InstanceData(**{name: value[keep] for name, value in fields.items()})

    def _count_skipped(self, num: int) -> None:
        if num and not self.skipped_regions:
            print_log(f'skipped {num} face region(s) with no pixel inside the frame; '
                      'the total is kept in AnonymizerDataPreprocessor.skipped_regions',
                      logger='current', level=logging.WARNING)
        self.skipped_regions += num
