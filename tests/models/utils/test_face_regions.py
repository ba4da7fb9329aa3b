import math

import torch

from mmanon.models.utils import crop_regions, enlarge_regions, paste_regions

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


def test_gradients_reach_the_patches_of_moving_regions():
    clips = torch.rand(1, 3, 4, 30, 30)
    tubes = torch.tensor([[[5., 5, 10, 10], [6, 5, 11, 10], [7, 6, 12, 11], [8, 6, 13, 11]]])
    regions, _ = enlarge_regions(tubes, 1.5, 30, 30)
    (crop, ) = crop_regions(clips, torch.tensor([0]), regions)
    patch = crop.clone().requires_grad_()
    out = paste_regions(clips.clone(), torch.tensor([0]), regions, [patch * 2], feather=0.2)
    out.sum().backward()
    assert (patch.grad > 0).all()
