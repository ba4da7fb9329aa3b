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


def test_differentiable(textured_crops):
    crops = textured_crops.clone().requires_grad_()
    BoxBlur()(crops)[:, :, 8, 8].sum().backward()
    # The pixel (8, 8) of a 15x15 box is the mean of the 15x15 square around it, boundary reflected.
    assert crops.grad[0, 0, 8, 8] == pytest.approx(1 / 225)
    assert crops.grad[1, 0, 8, 8] == pytest.approx(1 / 225)


@pytest.mark.parametrize('kernel_size', [0, 4, 3.0])
def test_rejects_bad_kernel_size(kernel_size):
    with pytest.raises(ValueError, match=f'positive odd int, but got {kernel_size!r}'):
        BoxBlur(kernel_size=kernel_size)
