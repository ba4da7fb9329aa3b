"""Face regions of clips and frames: where they are, how they are cut out, anonymized and pasted back.

Shared by the data preprocessor (clips ``(C, T, H, W)``) and the video tool (frames, as clips with ``T = 1``),
so both anonymize with the same geometry and the same seamless blending.
"""
from typing import List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor


def head_regions(person_boxes: Tensor, head_ratio: float = 0.25) -> Tensor:
    """The top part of each person box, where the head is when no face box is known.

    Args:
        person_boxes (Tensor): (K, 4) boxes (x1, y1, x2, y2) in pixels.
        head_ratio (float): Fraction of the box height, from its top. Defaults to 0.25.

    Returns:
        Tensor: (K, 4) head regions, as wide as the person box.
    """
    heads = person_boxes.clone()
    heads[:, 3] = person_boxes[:, 1] + head_ratio * (person_boxes[:, 3] - person_boxes[:, 1])
    return heads


def enlarge_regions(boxes: Tensor, margin: float, height: int, width: int) -> Tuple[Tensor, Tensor]:
    """Scale boxes about their centres, clip them to the frame and round them outwards to whole pixels.

    Args:
        boxes (Tensor): (K, 4) boxes (x1, y1, x2, y2) in pixels, float.
        margin (float): Scale factor of width and height (the paper enlarges faces about 2x).
        height (int): Frame height.
        width (int): Frame width.

    Returns:
        tuple[Tensor, Tensor]: (K, 4) long regions, and a (K,) bool mask of the usable ones (at least one
        pixel inside the frame; a region entirely outside the frame, or a degenerate box, is not).
    """
    boxes = boxes.float()
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0) * margin / 2
    lo = torch.floor(centre - half)
    hi = torch.ceil(centre + half)
    limit = boxes.new_tensor([width, height])
    lo = torch.minimum(torch.maximum(lo, torch.zeros_like(lo)), limit)
    hi = torch.minimum(torch.maximum(hi, torch.zeros_like(hi)), limit)
    regions = torch.cat([lo, hi], dim=1).long()
    valid = (regions[:, 2] > regions[:, 0]) & (regions[:, 3] > regions[:, 1]) & \
        torch.isfinite(boxes).all(dim=1)
    return regions, valid


def feather_mask(height: int, width: int, feather: float, device=None, dtype=torch.float32) -> Tensor:
    """Blending weights of an anonymized region: 1 in the middle, falling towards the border.

    The weight ramps linearly over ``feather`` of the region's height and width on each side and never
    reaches 0 inside the region (the outermost pixel gets ``1 / (ramp + 1)``), so every pixel of the region
    is changed while the paste leaves no visible seam.

    Args:
        height (int): Region height in pixels.
        width (int): Region width in pixels.
        feather (float): Ramp width as a fraction of the region size, in [0, 0.5]; 0 pastes hard-edged.
        device (torch.device, optional): Device of the mask.
        dtype (torch.dtype): Dtype of the mask. Defaults to float32.

    Returns:
        Tensor: (height, width) weights in (0, 1].
    """

    def ramp(n):
        steps = max(int(round(feather * n)), 0)
        pos = torch.arange(n, device=device, dtype=dtype)
        dist = torch.minimum(pos, n - 1 - pos) + 1
        return (dist / (steps + 1)).clamp(max=1.0)

    return ramp(height)[:, None] * ramp(width)[None, :]


def crop_regions(clips: Union[Tensor, Sequence[Tensor]], sample_inds: Tensor, regions: Tensor) -> List[Tensor]:
    """Cut regions out of a batch of clips.

    Args:
        clips (Tensor | Sequence[Tensor]): (N, C, T, H, W), or N clips (C, T, H, W).
        sample_inds (Tensor): (K,) the clip each region belongs to.
        regions (Tensor): (K, 4) long regions from :func:`enlarge_regions`.

    Returns:
        list[Tensor]: K tensors (T, C, h, w), one per region: the region in every frame of its clip.
    """
    return [
        clips[n][:, :, y1:y2, x1:x2].transpose(0, 1)
        for n, (x1, y1, x2, y2) in zip(sample_inds.tolist(), regions.tolist())
    ]


def resize_crops(crops: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize of (N, C, h, w) crops to ``size`` (h, w); differentiable, a no-op at equal size."""
    if tuple(crops.shape[-2:]) == tuple(size):
        return crops
    if crops.shape[0] == 0:
        return crops.new_zeros((0, crops.shape[1], *size))
    return F.interpolate(crops, size=tuple(size), mode='bilinear', align_corners=False)


def anonymize_crops(anonymizer, crops: List[Tensor]) -> List[Tensor]:
    """Run an anonymizer over crops of various sizes.

    An anonymizer with a fixed ``crop_size`` gets every crop resized to it in one batch (the learned one is
    fastest that way) and its outputs resized back; one that works at any size gets each crop (each face
    track) at its native resolution.

    Args:
        anonymizer (BaseAnonymizer): Maps (N, C, h, w) pixel crops to crops of the same shape.
        crops (list[Tensor]): Tensors (T, C, h, w).

    Returns:
        list[Tensor]: The anonymized crops, shapes as given.
    """
    if not crops:
        return []
    size = getattr(anonymizer, 'crop_size', None)
    if size is None:
        return [anonymizer(c) for c in crops]
    batch = torch.cat([resize_crops(c, size) for c in crops])
    outputs = anonymizer(batch).split([c.shape[0] for c in crops])
    return [resize_crops(o, c.shape[-2:]) for o, c in zip(outputs, crops)]


def paste_regions(clips: Tensor, sample_inds: Tensor, regions: Tensor, patches: List[Tensor],
                  feather: float) -> Tensor:
    """Blend patches into the clips' regions, in place; pixels outside every region are left untouched.

    Overlapping regions are pasted in order, each blended over what is there already.

    Args:
        clips (Tensor): (N, C, T, H, W), modified in place (it must not be a leaf that requires grad).
        sample_inds (Tensor): (K,) the clip each region belongs to.
        regions (Tensor): (K, 4) long regions.
        patches (list[Tensor]): K tensors (T, C, h, w) matching the regions.
        feather (float): See :func:`feather_mask`.

    Returns:
        Tensor: ``clips``; gradients flow into the patches.
    """
    return _PasteRegions.apply(clips, sample_inds, regions, feather, *patches)


class _PasteRegions(torch.autograd.Function):
    """:func:`paste_regions` with a backward pass that costs the regions' size: autograd's own one for K
    in-place region assignments would clone the whole batch's gradient K times."""

    @staticmethod
    def forward(ctx, clips: Tensor, sample_inds: Tensor, regions: Tensor, feather: float, *patches: Tensor):
        boxes = list(zip(sample_inds.tolist(), regions.tolist()))
        masks = []
        for (n, (x1, y1, x2, y2)), patch in zip(boxes, patches):
            mask = feather_mask(y2 - y1, x2 - x1, feather, device=clips.device, dtype=clips.dtype)
            # One fused lerp against a contiguous patch: elementwise arithmetic between the strided region view
            # and a transposed patch is two orders of magnitude slower on CPU.
            region = clips[n, :, :, y1:y2, x1:x2]
            clips[n, :, :, y1:y2, x1:x2] = torch.lerp(region, patch.transpose(0, 1).contiguous(), mask)
            masks.append(mask)
        ctx.mark_dirty(clips)
        ctx.boxes, ctx.masks = boxes, masks
        return clips

    @staticmethod
    def backward(ctx, grad: Tensor):
        # Last pasted first: a region's blend passes (1 - mask) of the gradient on to what lay beneath it.
        grad = grad.clone()
        patch_grads = [None] * len(ctx.boxes)
        for k in reversed(range(len(ctx.boxes))):
            n, (x1, y1, x2, y2) = ctx.boxes[k]
            region = grad[n, :, :, y1:y2, x1:x2]
            patch_grads[k] = (region * ctx.masks[k]).transpose(0, 1)
            region.mul_(1 - ctx.masks[k])
        return (grad if ctx.needs_input_grad[0] else None, None, None, None, *patch_grads)


def to_uint8(pixels: Tensor) -> Tensor:
    """Float pixel values as uint8 pixels, rounded and clipped to [0, 255]."""
    return pixels.round().clamp(0, 255).to(torch.uint8)
