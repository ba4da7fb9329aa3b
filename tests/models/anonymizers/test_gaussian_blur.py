import cv2
import pytest
import torch

from mmanon.models.anonymizers import GaussianBlur


def test_preserves_constant_image():
    crops = torch.full((2, 3, 20, 30), 200.)
    torch.testing.assert_close(GaussianBlur()(crops), crops, rtol=0, atol=1e-4)
    white = torch.full((1, 3, 9, 9), 255.)
    assert GaussianBlur()(white).max() <= 255


def test_smooths_an_edge():
    step = torch.zeros(1, 1, 16, 16)
    step[..., 8:] = 255
    out = GaussianBlur(kernel_size=5, sigma=1.)(step)[0, 0]
    # The edge becomes a symmetric ramp across columns 7 | 8; far from it nothing changes.
    assert 0 < out[4, 7] < 127.5 < out[4, 8] < 255
    assert out[4, 7] + out[4, 8] == pytest.approx(255)
    assert out[4, 0] == 0 and out[4, 15] == 255
    torch.testing.assert_close(out, out[:1].expand(16, 16))


def test_matches_opencv(textured_crops):
    out = GaussianBlur(kernel_size=15)(textured_crops)
    for crop, blurred in zip(textured_crops, out):
        # sigma 0 makes OpenCV derive it from the kernel size (its fixed tables only cover sizes up to 7).
        expected = cv2.GaussianBlur(
            crop.permute(1, 2, 0).numpy(), (15, 15), 0, borderType=cv2.BORDER_REFLECT_101)
        torch.testing.assert_close(blurred.permute(1, 2, 0), torch.from_numpy(expected), rtol=0, atol=1e-3)


def test_kernel_ratio_gives_the_same_blur_at_every_face_size():
    """A face region and the same region at twice the resolution are blurred alike: the blurred large crop,
    scaled down, is close to the blurred small one. A fixed kernel blurs the large one half as much."""
    generator = torch.Generator().manual_seed(0)
    small = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 10, generator=generator) * 255, size=(48, 40),
                                            mode='bilinear', align_corners=False)
    large = torch.nn.functional.interpolate(small, scale_factor=2, mode='bilinear', align_corners=False)

    def down(x):
        return torch.nn.functional.avg_pool2d(x, 2)

    relative = GaussianBlur(kernel_ratio=0.5)
    fixed = GaussianBlur(kernel_size=25)
    assert (down(relative(large)) - relative(small)).abs().mean() < 1.5
    assert (down(fixed(large)) - fixed(small)).abs().mean() > 3 * (down(relative(large)) - relative(small)).abs().mean()


def test_kernel_ratio_rounds_to_an_odd_length():
    crops = torch.rand(1, 3, 20, 30) * 255
    torch.testing.assert_close(GaussianBlur(kernel_ratio=0.3)(crops), GaussianBlur(9)(crops), rtol=0, atol=0)
    torch.testing.assert_close(GaussianBlur(kernel_ratio=0.01)(crops), crops, rtol=0, atol=0)


def test_kernel_shrinks_to_the_crop():
    crops = torch.rand(1, 3, 4, 4) * 255
    torch.testing.assert_close(GaussianBlur(15)(crops), GaussianBlur(3)(crops), rtol=0, atol=1e-4)
    # An explicit sigma is kept by the shrunk kernel.
    torch.testing.assert_close(
        GaussianBlur(15, sigma=3.)(crops), GaussianBlur(3, sigma=3.)(crops), rtol=0, atol=1e-4)
    one_pixel = torch.rand(2, 3, 1, 1) * 255
    assert torch.equal(GaussianBlur()(one_pixel), one_pixel)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match='positive odd int, but got 8'):
        GaussianBlur(kernel_size=8)
    with pytest.raises(ValueError, match='kernel_ratio must be in'):
        GaussianBlur(kernel_ratio=float('nan'))
    with pytest.raises(ValueError, match='sigma must be None or positive, but got -1'):
        GaussianBlur(sigma=-1)
