"""The clips' gradient computed only inside the anonymized regions: the same values there as the stock backward
pass of the convolution, zero elsewhere, for the geometries of the stock detectors' first convolutions."""
import pytest
import torch

from mmanon.models.utils import region_windows, windowed_conv_input_grad

# (kernel, stride, padding, dilation, groups) of first convolutions: SlowOnly-R50 and SlowFast's slow pathway,
# the toy benchmark's SlowOnly, SlowFast's fast pathway, VideoMAE's patch embedding, X3D's, and an odd one.
GEOMETRIES = {
    'slowonly': ((1, 7, 7), (1, 2, 2), (0, 3, 3), (1, 1, 1), 1),
    'toy': ((3, 7, 7), (1, 2, 2), (1, 3, 3), (1, 1, 1), 1),
    'fast-pathway': ((5, 7, 7), (1, 2, 2), (2, 3, 3), (1, 1, 1), 1),
    'patch-embedding': ((2, 16, 16), (2, 16, 16), (0, 0, 0), (1, 1, 1), 1),
    'x3d': ((1, 3, 3), (1, 2, 2), (0, 1, 1), (1, 1, 1), 1),
    'odd': ((3, 2, 3), (2, 3, 1), (1, 0, 2), (1, 2, 1), 3),
}
# (n, t1, t2, y1, y2, x1, x2): whole clips' regions, single frames, regions at every edge, overlapping ones,
# windows of several sizes (so that several batches are made).
WINDOWS = torch.tensor([[0, 0, 8, 3, 20, 5, 30], [0, 2, 3, 0, 11, 40, 50], [1, 7, 8, 35, 40, 0, 1],
                        [2, 0, 8, 0, 40, 0, 20], [2, 1, 2, 10, 12, 10, 45], [2, 0, 8, 5, 30, 7, 28],
                        [1, 3, 5, 17, 18, 49, 50]])


def inside(windows, shape):
    mask = torch.zeros(shape, dtype=torch.bool)
    for n, t1, t2, y1, y2, x1, x2 in windows.tolist():
        mask[n, :, t1:t2, y1:y2, x1:x2] = True
    return mask


@pytest.mark.parametrize('geometry', GEOMETRIES)
def test_windowed_input_gradient_is_the_full_one_inside_the_windows(geometry):
    kernel, stride, padding, dilation, groups = GEOMETRIES[geometry]
    torch.manual_seed(0)
    inputs = torch.randn(3, 3 * (groups > 1) + 3, 8, 40, 50, dtype=torch.float64, requires_grad=True)
    conv = torch.nn.Conv3d(inputs.shape[1], 6, kernel, stride, padding, dilation, groups).double()
    output = conv(inputs)
    grad_output = torch.randn_like(output)
    (full, ) = torch.autograd.grad(output, inputs, grad_output)
    grad = windowed_conv_input_grad(grad_output, conv.weight, inputs.shape, stride, padding, dilation, groups,
                                    WINDOWS)
    mask = inside(WINDOWS, inputs.shape)
    torch.testing.assert_close(grad[mask], full[mask], rtol=0, atol=1e-12)
    assert not grad[~mask].any()
    assert full[mask].any()


def test_windows_that_cover_the_input_leave_the_full_gradient_to_the_caller():
    conv = torch.nn.Conv3d(3, 4, (1, 7, 7), (1, 2, 2), (0, 3, 3))
    grad_output = torch.randn(2, 4, 4, 20, 20)
    covering = torch.tensor([[0, 0, 4, 0, 40, 0, 40], [1, 0, 4, 0, 40, 0, 40]])
    assert windowed_conv_input_grad(grad_output, conv.weight, (2, 3, 4, 40, 40), conv.stride, conv.padding,
                                    conv.dilation, 1, covering) is None


def test_region_windows_follow_the_tubes_frame_by_frame():
    inds = torch.tensor([0, 1])
    static = torch.tensor([[1, 2, 11, 12], [5, 6, 15, 16]])
    assert region_windows(inds, static, None, 4).tolist() == [[0, 0, 4, 2, 12, 1, 11], [1, 0, 4, 6, 16, 5, 15]]
    tubes = torch.tensor([[[1, 2, 11, 12], [1, 2, 11, 12], [0, 0, 0, 0], [4, 2, 14, 12]],
                          [[5, 6, 15, 16], [6, 6, 16, 16], [7, 6, 17, 16], [7, 6, 17, 16]]])
    # Consecutive frames with the same region share a window; frames without one have none.
    assert region_windows(inds, tubes, None, 4).tolist() == [[0, 0, 2, 2, 12, 1, 11], [0, 3, 4, 2, 12, 4, 14],
                                                             [1, 0, 1, 6, 16, 5, 15], [1, 1, 2, 6, 16, 6, 16],
                                                             [1, 2, 4, 6, 16, 7, 17]]
    # A pathway that sees every second frame: its frames 0 and 1 are the clip's frames 0 and 2.
    assert region_windows(inds, tubes, torch.tensor([0, 2]), 2).tolist() == [[0, 0, 1, 2, 12, 1, 11],
                                                                             [1, 0, 1, 6, 16, 5, 15],
                                                                             [1, 1, 2, 6, 16, 7, 17]]
