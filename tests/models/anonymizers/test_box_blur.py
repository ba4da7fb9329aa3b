import cv2
import pytest
import torch

from mmanon.models.anonymizers import BoxBlur


def test_hand_computed():
    image = torch.zeros(1, 1, 5, 5)
    image[0, 0, 1, 1] = 9
    out = BoxBlur(kernel_size=3)(image)[0, 0]
    # Interior: every 3x3 window around (1..2, 1..2) holds the 9 once.
    assert out[1, 1] == 1 and out[2, 2] == 1 and out[3, 3] == 0
    # Corner: reflection (excluding the edge pixel) puts the 9 in the window four times.
    assert out[0, 0] == 4
    assert out[0, 1] == 2


def test_matches_opencv(textured_crops):
    out = BoxBlur(kernel_size=7)(textured_crops)
    for crop, blurred in zip(textured_crops, out):
        expected = cv2.blur(crop.permute(1, 2, 0).numpy(), (7, 7), borderType=cv2.BORDER_REFLECT_101)
        torch.testing.assert_close(blurred.permute(1, 2, 0), torch.from_numpy(expected), rtol=0, atol=1e-3)


def test_kernel_shrinks_to_the_crop():
    crop = torch.rand(1, 1, 4, 9) * 255
    # 4 rows fit a kernel of 3, 9 columns one of 9.
    expected = cv2.blur(crop[0, 0].numpy(), (9, 3), borderType=cv2.BORDER_REFLECT_101)
    torch.testing.assert_close(BoxBlur(kernel_size=15)(crop)[0, 0], torch.from_numpy(expected), rtol=0, atol=1e-3)
    one_pixel = torch.rand(1, 3, 1, 1) * 255
    assert torch.equal(BoxBlur()(one_pixel), one_pixel)
    assert torch.equal(BoxBlur(kernel_size=15)(one_pixel), one_pixel)


def test_large_kernel_on_a_large_crop_matches_opencv():
    """The running sums stay exact enough over long rows of bright pixels."""
    crop = torch.rand(1, 3, 300, 400, generator=torch.Generator().manual_seed(1)) * 255
    out = BoxBlur(kernel_size=151)(crop)[0].permute(1, 2, 0)
    expected = cv2.blur(crop[0].permute(1, 2, 0).numpy(), (151, 151), borderType=cv2.BORDER_REFLECT_101)
    torch.testing.assert_close(out, torch.from_numpy(expected), rtol=0, atol=1e-2)


@pytest.mark.parametrize('size,kernel', [((20, 30), 15), ((40, 61), 31), ((61, 40), 31), ((3, 4), 3)])
def test_kernel_ratio_is_a_fraction_of_the_longer_side(size, kernel):
    crop = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)) * 255
    torch.testing.assert_close(BoxBlur(kernel_ratio=0.5)(crop), BoxBlur(kernel_size=kernel)(crop), rtol=0, atol=0)


def test_kernel_ratio_is_the_default():
    assert BoxBlur().kernel_size is None and BoxBlur().kernel_ratio == BoxBlur.default_kernel_ratio
    assert BoxBlur(kernel_size=7).kernel_ratio is None


def test_differentiable(textured_crops):
    crops = textured_crops.clone().requires_grad_()
    BoxBlur(kernel_size=15)(crops)[:, :, 8, 8].sum().backward()
    # The pixel (8, 8) of a 15x15 box is the mean of the 15x15 square around it, boundary reflected.
    assert crops.grad[0, 0, 8, 8] == pytest.approx(1 / 225)
    assert crops.grad[1, 0, 8, 8] == pytest.approx(1 / 225)


@pytest.mark.parametrize('kernel_size', [0, 4, 3.0])
def test_rejects_bad_kernel_size(kernel_size):
    with pytest.raises(ValueError, match=f'positive odd int, but got {kernel_size!r}'):
        BoxBlur(kernel_size=kernel_size)


@pytest.mark.parametrize('kernel_ratio', [0, -0.5, 1.5, float('nan')])
def test_rejects_bad_kernel_ratio(kernel_ratio):
    with pytest.raises(ValueError, match='kernel_ratio must be in'):
        BoxBlur(kernel_ratio=kernel_ratio)
    with pytest.raises(ValueError, match='not both'):
        BoxBlur(kernel_size=3, kernel_ratio=0.5)
