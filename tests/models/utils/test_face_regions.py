"""Face regions: one size per face tube, cut out and pasted back frame by frame in groups; the values and the
gradients of plain slicing and in-place blending, at the regions' cost."""
import math

import pytest
import torch

from mmanon.models.utils import (consecutive_rows, crop_frames, crop_regions, enlarge_regions, feather_mask,
                                 paste_regions)

NAN = [math.nan] * 4


def test_a_tube_gets_one_region_size_centred_on_each_frame():
    tubes = torch.tensor([[[10., 10, 20, 20], [12, 10, 22, 20], NAN, [14, 11, 26, 23], [45, 35, 55, 45]],
                          [[0, 0, 0, 5], [1, 1, 3, 3], NAN, NAN, [-30, -30, -20, -20]]])
    regions, valid = enlarge_regions(tubes, 2.0, height=40, width=50)
    # The largest frame (12 x 12 -> 24 x 24) sets the size; each frame's region is centred on its own box,
    # then clipped to the frame (the last frame's, at the corner, to 13 x 11).
    assert regions[0].tolist() == [[3, 3, 27, 27], [5, 3, 29, 27], [0, 0, 0, 0], [8, 5, 32, 29], [38, 28, 50, 40]]
    # No box, a box without area or one outside the frame gives no region.
    assert valid.tolist() == [[True, True, False, True, True], [False, True, False, False, False]]
    assert (regions[1, [0, 2, 3, 4]] == 0).all()
    # A tube whose box never changes has the region of that box, as (K, 4) boxes have.
    box = torch.tensor([[7.3, 8.1, 19.6, 25.2]])
    static, _ = enlarge_regions(box[:, None].expand(-1, 6, -1), 1.7, 40, 50)
    assert (static == enlarge_regions(box, 1.7, 40, 50)[0][:, None]).all()


def test_moving_regions_are_cut_and_pasted_frame_by_frame_in_one_group():
    clips = torch.rand(2, 3, 5, 40, 50)
    tubes = torch.tensor([[[10., 10, 20, 20], [12, 10, 22, 20], NAN, [14, 11, 26, 23], [45, 35, 55, 45]]])
    regions, _ = enlarge_regions(tubes, 2.0, 40, 50)
    inds = torch.tensor([1])
    crops = crop_regions(clips, inds, regions)
    # Frames 0, 1 and 3 share the 24 x 24 size; the clipped corner region is a group of its own.
    assert [tuple(c.shape) for c in crops] == [(3, 3, 24, 24), (1, 3, 12, 12)]
    assert [f.tolist() for f in crop_frames(regions, 5)] == [[0, 1, 3], [4]]
    # Rows 0 and 1 show frames 0 and 1; rows 1 and 2 (frames 1 and 3) are no pair.
    assert [consecutive_rows(f).tolist() for f in crop_frames(regions, 5)] == [[0], []]
    # A region (K, 4) covers every frame of its clip.
    assert [f.tolist() for f in crop_frames(regions[:, 0], 5)] == [[0, 1, 2, 3, 4]]
    for crop, frames in zip(crops, ([0, 1, 3], [4])):
        for i, t in enumerate(frames):
            x1, y1, x2, y2 = regions[0, t].tolist()
            assert torch.equal(crop[i], clips[1, :, t, y1:y2, x1:x2])

    patches = [torch.full_like(c, -1.) for c in crops]
    out = paste_regions(clips.clone(), inds, regions, patches, feather=0.)
    inside = torch.zeros_like(clips, dtype=torch.bool)
    for t, (x1, y1, x2, y2) in enumerate(regions[0].tolist()):
        inside[1, :, t, y1:y2, x1:x2] = True
    assert (out[inside] == -1).all() and torch.equal(out[~inside], clips[~inside])


def _assert_paste_matches(clips, sample_inds, regions, patches, weights, blended, expected_clips, expected_patches):
    """paste_regions gives ``blended`` exactly, and the gradients of the reference blending under ``weights``."""
    ours_patches = [p.clone().requires_grad_() for p in patches]
    ours_clips = clips.clone().requires_grad_()
    pasted = paste_regions(ours_clips * 1, sample_inds, regions, ours_patches, 0.2)
    (pasted * weights).sum().backward()
    assert torch.equal(pasted, blended)
    for ours, expected in zip(ours_patches, expected_patches):
        torch.testing.assert_close(ours.grad, expected.grad, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours_clips.grad, expected_clips.grad, rtol=0, atol=1e-6)


def test_paste_regions_matches_in_place_blending_with_overlaps():
    generator = torch.Generator().manual_seed(0)
    clips = torch.randn(2, 3, 4, 32, 40, generator=generator)
    sample_inds = torch.tensor([0, 0, 1])
    regions = torch.tensor([[2, 3, 18, 21], [10, 8, 30, 28], [5, 5, 15, 15]])  # the first two overlap
    patches = [torch.randn(4, 3, y2 - y1, x2 - x1, generator=generator) for x1, y1, x2, y2 in regions.tolist()]
    weights = torch.randn(clips.shape, generator=generator)

    expected_patches = [p.clone().requires_grad_() for p in patches]
    expected_clips = clips.clone().requires_grad_()
    blended = expected_clips * 1  # not a leaf, so it can be written in place
    for n, (x1, y1, x2, y2), patch in zip(sample_inds.tolist(), regions.tolist(), expected_patches):
        mask = feather_mask(y2 - y1, x2 - x1, 0.2)
        blended[n, :, :, y1:y2, x1:x2] = torch.lerp(blended[n, :, :, y1:y2, x1:x2], patch.transpose(0, 1), mask)
    (blended * weights).sum().backward()

    _assert_paste_matches(clips, sample_inds, regions, patches, weights, blended, expected_clips, expected_patches)


def test_paste_regions_of_tubes_matches_frame_by_frame_blending_with_overlaps():
    generator = torch.Generator().manual_seed(0)
    clips = torch.randn(2, 3, 5, 32, 40, generator=generator)
    sample_inds = torch.tensor([0, 0, 1])
    tubes = torch.tensor([
        [[4., 4, 10, 12], [6, 5, 12, 13], [8, 6, 14, 14], NAN, [30, 20, 42, 30]],  # moves, leaves the frame
        [[8., 8, 16, 16]] * 5,  # stays put, overlapping the first
        [[5., 5, 11, 11], [5, 5, 11, 11], [6, 5, 12, 11], [6, 5, 12, 11], [6, 5, 12, 11]],
    ])
    regions, _ = enlarge_regions(tubes, 1.5, 32, 40)
    patches = [torch.randn(c.shape, generator=generator) for c in crop_regions(clips, sample_inds, regions)]
    weights = torch.randn(clips.shape, generator=generator)

    # Frame by frame, in the order of the tubes' groups of frames: what paste_regions does in one go.
    expected_patches = [p.clone().requires_grad_() for p in patches]
    expected_clips = clips.clone().requires_grad_()
    blended = expected_clips * 1  # not a leaf, so it can be written in place
    groups = []
    for n, tube in zip(sample_inds.tolist(), regions.tolist()):
        sizes = {}
        for t, (x1, y1, x2, y2) in enumerate(tube):
            if x2 > x1 and y2 > y1:
                sizes.setdefault((y2 - y1, x2 - x1), []).append(t)
        groups += [(n, tube, frames) for frames in sizes.values()]
    assert len(groups) == len(patches)
    for (n, tube, frames), patch in zip(groups, expected_patches):
        for i, t in enumerate(frames):
            x1, y1, x2, y2 = tube[t]
            mask = feather_mask(y2 - y1, x2 - x1, 0.2)
            blended[n, :, t, y1:y2, x1:x2] = torch.lerp(blended[n, :, t, y1:y2, x1:x2], patch[i], mask)
    (blended * weights).sum().backward()

    _assert_paste_matches(clips, sample_inds, regions, patches, weights, blended, expected_clips, expected_patches)


@pytest.mark.parametrize('moving', [False, True])
def test_crop_regions_of_a_batch_with_grad_matches_plain_slicing_with_overlaps(moving):
    generator = torch.Generator().manual_seed(0)
    clips = torch.randn(2, 3, 5, 32, 40, generator=generator)
    sample_inds = torch.tensor([0, 0, 1])
    boxes = torch.tensor([[4., 4, 10, 12], [8, 8, 16, 16], [5, 5, 11, 11]])  # the first two overlap
    if moving:
        boxes = boxes[:, None].repeat(1, 5, 1)
        boxes[0] += torch.arange(5.)[:, None] * 2  # moves: gathered by index, not sliced
    regions, _ = enlarge_regions(boxes, 1.5, 32, 40)

    expected_clips = clips.clone().requires_grad_()
    expected = crop_regions(list(expected_clips), sample_inds, regions)  # per clip: autograd's own backward
    weights = [torch.randn(c.shape, generator=generator) for c in expected]
    sum((c * w).sum() for c, w in zip(expected, weights)).backward()

    ours_clips = clips.clone().requires_grad_()
    ours = crop_regions(ours_clips, sample_inds, regions)
    sum((c * w).sum() for c, w in zip(ours, weights)).backward()
    assert len(ours) == len(expected)
    for crop, reference in zip(ours, expected):
        assert torch.equal(crop, reference)
    torch.testing.assert_close(ours_clips.grad, expected_clips.grad, rtol=0, atol=1e-6)
    assert crop_regions(ours_clips, sample_inds[:0], regions[:0]) == []
