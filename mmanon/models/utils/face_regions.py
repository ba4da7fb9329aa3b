"""Face regions of clips and frames: where they are, how they are cut out, anonymized and pasted back.

Shared by the data preprocessor (clips ``(C, T, H, W)``) and the video tool (frames, as clips with ``T = 1``),
so both anonymize with the same geometry and the same seamless blending.
"""
from typing import Dict, Iterator, List, Sequence, Tuple, Union

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

    Boxes may be given per frame, as face tubes: ``(K, T, 4)``, one box per face and frame, NaN where the
    face is not known in a frame. Every frame of a tube then gets a region of the same size, the largest of
    its frames', centred on that frame's enlarged box (before clipping): the anonymizer sees the face at one
    scale all through the clip, so it does not flicker as the detector's box size jitters, and frames whose
    regions are equal can be cut out and pasted as one (see :func:`crop_regions`).

    Args:
        boxes (Tensor): (K, 4) boxes (x1, y1, x2, y2) in pixels, or (K, T, 4) face tubes.
        margin (float): Scale factor of width and height (the paper enlarges faces about 2x).
        height (int): Frame height.
        width (int): Frame width.

    Returns:
        tuple[Tensor, Tensor]: Long regions of the shape of ``boxes``, and a bool mask of the usable ones,
        (K,) or (K, T): a box with an area and at least one pixel of its region inside the frame. Unusable
        regions are all zero (empty).
    """
    boxes = boxes.float()
    tubes = boxes if boxes.dim() == 3 else boxes[:, None]
    present = torch.isfinite(tubes).all(dim=-1) & (tubes[..., 2:] > tubes[..., :2]).all(dim=-1)
    tubes = torch.where(present[..., None], tubes, torch.zeros_like(tubes))
    centre = (tubes[..., :2] + tubes[..., 2:]) / 2
    half = (tubes[..., 2:] - tubes[..., :2]) * margin / 2
    lo = torch.floor(centre - half)
    hi = torch.ceil(centre + half)
    # One size per tube; the extra pixels of a smaller frame's region are split about its centre.
    size = (hi - lo).amax(dim=1, keepdim=True)
    lo = lo - torch.div(size - (hi - lo), 2, rounding_mode='floor')
    hi = lo + size
    limit = boxes.new_tensor([width, height])
    lo = torch.minimum(torch.maximum(lo, torch.zeros_like(lo)), limit)
    hi = torch.minimum(torch.maximum(hi, torch.zeros_like(hi)), limit)
    regions = torch.cat([lo, hi], dim=-1).long()
    valid = present & (regions[..., 2] > regions[..., 0]) & (regions[..., 3] > regions[..., 1])
    regions = regions * valid[..., None]
    if boxes.dim() == 2:
        return regions[:, 0], valid[:, 0]
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


def _region_pixels(sample_inds: Tensor, regions: Tensor, num_frames: int, height: int, width: int,
                   device) -> Iterator[Tuple[int, Union[tuple, Tensor], Tuple[int, int, int]]]:
    """Where each region's pixels are in its clip: ``(clip index, index, (frames, h, w))``.

    A (K, 4) region covers all frames of its clip. A (K, T, 4) face tube is split into groups of frames whose
    regions have the same size (usually one per tube, see :func:`enlarge_regions`), frames with empty regions
    left out. The index is a tuple of slices into the clip ``(C, T, H, W)`` (a view) where the region stays
    put over consecutive frames; where it moves, it is the flat index of each pixel in ``(C, T * H * W)``, so
    that the whole group is gathered or scattered in one call, never frame by frame (and ``index_select`` is
    several times faster than indexing by frame, row and column tensors).
    """
    if regions.dim() == 2:
        for n, (x1, y1, x2, y2) in zip(sample_inds.tolist(), regions.tolist()):
            yield n, (slice(None), slice(None), slice(y1, y2), slice(x1, x2)), (num_frames, y2 - y1, x2 - x1)
        return
    for n, tube in zip(sample_inds.tolist(), regions.tolist()):
        for (h, w), frames in _tube_groups(tube).items():
            t0, x0, y0 = frames[0]
            shape = (len(frames), h, w)
            if all(f == (t0 + i, x0, y0) for i, f in enumerate(frames)):
                yield n, (slice(None), slice(t0, t0 + len(frames)), slice(y0, y0 + h), slice(x0, x0 + w)), shape
                continue
            t, x1, y1 = torch.tensor(frames, device=device).T
            corner = (t * height + y1) * width + x1
            offsets = torch.arange(h, device=device)[:, None] * width + torch.arange(w, device=device)
            yield n, (corner[:, None, None] + offsets).flatten(), shape


def _tube_groups(tube: List[List[int]]) -> Dict[Tuple[int, int], List[Tuple[int, int, int]]]:
    """The frames of one tube's regions ``[[x1, y1, x2, y2], ...]`` grouped by region size ``(h, w)``, in the
    order of their first frame: ``(t, x1, y1)`` of each frame with a non-empty region, in frame order."""
    groups = {}
    for t, (x1, y1, x2, y2) in enumerate(tube):
        if x2 > x1 and y2 > y1:
            groups.setdefault((y2 - y1, x2 - x1), []).append((t, x1, y1))
    return groups


def crop_frames(regions: Tensor, num_frames: int) -> List[Tensor]:
    """The clip frame of each row of each crop that :func:`crop_regions` cuts for ``regions``.

    Args:
        regions (Tensor): (K, 4) or (K, T, 4) long regions, as given to :func:`crop_regions`.
        num_frames (int): T, the clips' number of frames.

    Returns:
        list[Tensor]: One (T',) long tensor per crop, ascending: all T frames for a (K, 4) region; a tube's
        group's frames for tubes (so that two rows of a crop are consecutive frames of the clip exactly where
        their frame indices differ by 1).
    """
    if regions.dim() == 2:
        return [torch.arange(num_frames, device=regions.device)] * regions.shape[0]
    return [
        torch.tensor([t for t, _, _ in frames], dtype=torch.long, device=regions.device)
        for tube in regions.tolist() for frames in _tube_groups(tube).values()
    ]


def consecutive_rows(frames: Tensor) -> Tensor:
    """The rows ``i`` of a crop whose next row ``i + 1`` shows the clip's next frame.

    Args:
        frames (Tensor): (T',) the crop's frames, from :func:`crop_frames`.

    Returns:
        Tensor: The long indices ``i``; a gap in a tube (a frame without a box, or whose region has another
        size) pairs nothing across it.
    """
    return torch.nonzero(frames[1:] - frames[:-1] == 1).flatten()


def _take(clip: Tensor, index: Union[tuple, Tensor], shape: Tuple[int, int, int]) -> Tensor:
    """The (C, frames, h, w) pixels of a region of a (C, T, H, W) clip (see :func:`_region_pixels`)."""
    if isinstance(index, tuple):
        return clip[index]
    return clip.reshape(clip.shape[0], -1).index_select(1, index).view(clip.shape[0], *shape)


def _put(clip: Tensor, index: Union[tuple, Tensor], values: Tensor) -> None:
    """Write (C, frames, h, w) values into a region of a (C, T, H, W) clip, in place (see :func:`_take`)."""
    if isinstance(index, tuple):
        clip[index] = values
    else:
        clip.view(clip.shape[0], -1).index_copy_(1, index, values.flatten(1))


def _add(clip: Tensor, index: Union[tuple, Tensor], values: Tensor) -> None:
    """Add (C, frames, h, w) values to a region of a (C, T, H, W) clip, in place (see :func:`_take`)."""
    if isinstance(index, tuple):
        clip[index] += values
    else:
        clip.view(clip.shape[0], -1).index_add_(1, index, values.flatten(1))


def crop_regions(clips: Union[Tensor, Sequence[Tensor]], sample_inds: Tensor, regions: Tensor) -> List[Tensor]:
    """Cut regions out of a batch of clips.

    Args:
        clips (Tensor | Sequence[Tensor]): (N, C, T, H, W), or N clips (C, T, H, W).
        sample_inds (Tensor): (K,) the clip each region (or tube) belongs to.
        regions (Tensor): Long regions from :func:`enlarge_regions`: (K, 4), the same region in every frame
            of its clip, all non-empty; or (K, T, 4) tubes, one region per frame (empty where the tube has
            none).

    Returns:
        list[Tensor]: Tensors (T', C, h, w): for (K, 4) regions, K crops of all T frames; for tubes, one crop
        per group of a tube's frames whose regions have the same size (one per tube unless its region is
        clipped differently in some frames), in the order :func:`paste_regions` expects. From a batch tensor
        that requires grad, copies whose backward pass writes every region's gradient into one gradient of the
        batch.
    """
    size = clips[0].shape[-3:]
    pixels = list(_region_pixels(sample_inds, regions, *size, clips[0].device))
    if isinstance(clips, Tensor) and clips.requires_grad and pixels:
        return list(_CropRegions.apply(clips, pixels))
    return [_take(clips[n], index, shape).transpose(0, 1) for n, index, shape in pixels]


class _CropRegions(torch.autograd.Function):
    """:func:`crop_regions` of a batch that requires grad. Autograd's own backward of K region views would
    allocate a zero gradient of the whole batch for each of them and add the K together."""

    @staticmethod
    def forward(ctx, clips: Tensor, pixels: list):
        ctx.pixels, ctx.shape = pixels, clips.shape
        return tuple(_take(clips[n], index, shape).transpose(0, 1).clone() for n, index, shape in pixels)

    @staticmethod
    def backward(ctx, *crop_grads: Tensor):
        grad = crop_grads[0].new_zeros(ctx.shape)
        for (n, index, _), crop_grad in zip(ctx.pixels, crop_grads):
            _add(grad[n], index, crop_grad.transpose(0, 1))
        return grad, None


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
        regions (Tensor): (K, 4) or (K, T, 4) long regions, as given to :func:`crop_regions`.
        patches (list[Tensor]): Tensors (T', C, h, w) matching the crops of :func:`crop_regions`.
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
        pixels = list(_region_pixels(sample_inds, regions, *clips.shape[-3:], clips.device))
        masks = []
        for (n, index, shape), patch in zip(pixels, patches):
            mask = feather_mask(*shape[1:], feather, device=clips.device, dtype=clips.dtype)
            # One fused lerp against a contiguous patch: elementwise arithmetic between the strided region view
            # and a transposed patch is two orders of magnitude slower on CPU.
            _put(clips[n], index, torch.lerp(_take(clips[n], index, shape), patch.transpose(0, 1).contiguous(), mask))
            masks.append(mask)
        ctx.mark_dirty(clips)
        ctx.pixels, ctx.masks = pixels, masks
        return clips

    @staticmethod
    def backward(ctx, grad: Tensor):
        # Last pasted first: a region's blend passes (1 - mask) of the gradient on to what lay beneath it.
        grad = grad.clone(memory_format=torch.contiguous_format)
        patch_grads = [None] * len(ctx.pixels)
        for k in reversed(range(len(ctx.pixels))):
            n, index, shape = ctx.pixels[k]
            region = _take(grad[n], index, shape)
            patch_grads[k] = (region * ctx.masks[k]).transpose(0, 1)
            _put(grad[n], index, region * (1 - ctx.masks[k]))
        return (grad if ctx.needs_input_grad[0] else None, None, None, None, *patch_grads)


def to_uint8(pixels: Tensor) -> Tensor:
    """Float pixel values as uint8 pixels, rounded and clipped to [0, 255]."""
    return pixels.round().clamp(0, 255).to(torch.uint8)
