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
