"""Pasting anonymized patches back: the values and the gradients of plain in-place blending, at the regions' cost."""
import torch

from mmanon.models.utils import feather_mask, paste_regions


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

    ours_patches = [p.clone().requires_grad_() for p in patches]
    ours_clips = clips.clone().requires_grad_()
    pasted = paste_regions(ours_clips * 1, sample_inds, regions, ours_patches, 0.2)
    (pasted * weights).sum().backward()
    assert torch.equal(pasted, blended)
    for ours, expected in zip(ours_patches, expected_patches):
        torch.testing.assert_close(ours.grad, expected.grad, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours_clips.grad, expected_clips.grad, rtol=0, atol=1e-6)
