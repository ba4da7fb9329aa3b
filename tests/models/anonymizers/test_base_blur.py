import numpy as np
import pytest
import torch

from mmanon.models.anonymizers import BoxBlur, GaussianBlur


@pytest.mark.parametrize('blur', [BoxBlur(kernel_ratio=0.5), BoxBlur(kernel_size=7), GaussianBlur(kernel_ratio=0.5),
                                  GaussianBlur(kernel_size=9, sigma=4.)])
@pytest.mark.parametrize('shape', [(2, 3, 40, 30), (1, 1, 17, 64), (3, 3, 1, 9), (1, 3, 2, 2), (1, 4, 120, 90)])
def test_opencv_path_equals_the_differentiable_one(blur, shape):
    """Crops that need no gradient are filtered by OpenCV; the result is that of the autograd path."""
    crops = torch.rand(*shape, generator=torch.Generator().manual_seed(0)) * 255
    fast = blur(crops)
    exact = blur(crops.clone().requires_grad_()).detach()
    assert fast.shape == crops.shape and fast.dtype == crops.dtype
    torch.testing.assert_close(fast, exact, rtol=0, atol=1e-3)
    with torch.no_grad():
        torch.testing.assert_close(blur(crops.clone().requires_grad_()), fast, rtol=0, atol=0)


@pytest.mark.parametrize('blur', [BoxBlur(kernel_ratio=0.65), BoxBlur(kernel_size=7), GaussianBlur(kernel_ratio=0.5),
                                  GaussianBlur(kernel_size=9, sigma=4.)])
@pytest.mark.parametrize('size', [(40, 30), (17, 64), (1, 9), (2, 2), (1, 1), (121, 90)])
def test_uint8_path_of_the_video_tool_rounds_the_float_one(blur, size):
    """``anonymize_bgr`` filters uint8 images with the same kernels; OpenCV rounds the result, so every pixel
    is the float path's value rounded, give or take one grey level at a .5 boundary."""
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    out = blur.anonymize_bgr(image[::-1, :][::-1, :])  # a view with a stride, as a region of a frame is
    exact = blur(torch.from_numpy(image).permute(2, 0, 1)[None].float())[0].permute(1, 2, 0).round().numpy()
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.abs(out.astype(int) - exact.astype(int)).max() <= 1
    assert (out == exact).mean() > 0.95
