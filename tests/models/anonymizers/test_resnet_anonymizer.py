import pytest
import torch
from mmcv.cnn import ConvModule
from mmengine.registry import DefaultScope

from mmanon.models.anonymizers import ResNetAnonymizer
from mmanon.models.anonymizers.resnet_anonymizer import ATANH_EPS, instance_norm, upsample_conv
from mmanon.registry import MODELS
from mmanon.utils import check_trained_keys

SMALL = dict(base_channels=4, num_blocks=1, num_downsamples=1, crop_size=(16, 16))


def seeded(cls, **kwargs):
    """Build a network with the same random initial weights whatever the global random state, leaving that
    state untouched."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return cls(**kwargs)


def extreme_crops():
    """Textured crops that also hold pure black and white pixels, where atanh needs its clamp."""
    crops = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 255
    crops[:, :, 0] = 0
    crops[:, :, -1] = 255
    return crops


def test_residual_starts_as_identity():
    crops = extreme_crops()
    anonymizer = ResNetAnonymizer(**SMALL)
    torch.testing.assert_close(anonymizer(crops), crops, rtol=0, atol=1e-3)
    # The runner calls init_weights, and a Kaiming init_cfg re-draws every conv: the identity start stays.
    anonymizer = ResNetAnonymizer(**SMALL, init_cfg=dict(type='Kaiming', layer='Conv2d'))
    anonymizer.init_weights()
    torch.testing.assert_close(anonymizer(crops), crops, rtol=0, atol=1e-3)


def test_pretrained_weights_are_kept(tmp_path):
    trained = seeded(ResNetAnonymizer, **SMALL, residual=False)
    checkpoint = str(tmp_path / 'anonymizer.pth')
    torch.save(dict(state_dict=trained.state_dict()), checkpoint)
    anonymizer = ResNetAnonymizer(**SMALL, init_cfg=dict(type='Pretrained', checkpoint=checkpoint))
    anonymizer.init_weights()
    assert torch.equal(anonymizer.output_conv.conv.weight, trained.output_conv.conv.weight)


def test_plain_form_is_not_identity():
    crops = extreme_crops()
    out = seeded(ResNetAnonymizer, **SMALL, residual=False)(crops)
    assert out.shape == crops.shape and out.min() >= 0 and out.max() <= 255
    assert (out - crops).abs().mean() > 10


def test_empty_batch():
    out = ResNetAnonymizer(**SMALL)(torch.empty(0, 3, 16, 16))
    assert out.shape == (0, 3, 16, 16) and out.dtype == torch.float32


def gradients(anonymizer):
    """The gradient magnitude of every parameter for a loss on the output, relative to the largest one."""
    anonymizer.zero_grad()
    out = anonymizer(extreme_crops())
    # Any loss that depends on the output position by position.
    (out / 255 * torch.linspace(-1, 1, out.numel()).view_as(out)).mean().backward()
    magnitudes = {name: param.grad.abs().mean().item() for name, param in anonymizer.named_parameters()}
    largest = max(magnitudes.values())
    return {name: magnitude / largest for name, magnitude in magnitudes.items()}


def test_gradient_reaches_every_parameter_in_plain_form():
    for name, magnitude in gradients(seeded(ResNetAnonymizer, **SMALL, residual=False)).items():
        assert magnitude > 1e-4, name


def test_gradient_reaches_every_parameter_once_the_last_conv_moves():
    anonymizer = seeded(ResNetAnonymizer, **SMALL)
    magnitudes = gradients(anonymizer)
    # At the identity start only the zeroed last conv learns ...
    learning = {name for name, magnitude in magnitudes.items() if magnitude > 1e-4}
    assert learning == {'output_conv.conv.weight', 'output_conv.conv.bias'}
    assert magnitudes['encoder.0.conv.weight'] == 0
    # ... and once it has moved off zero, every parameter does.
    torch.nn.init.normal_(anonymizer.output_conv.conv.weight, std=1e-2, generator=torch.Generator().manual_seed(0))
    for name, magnitude in gradients(anonymizer).items():
        assert magnitude > 1e-4, name


def test_default_architecture():
    anonymizer = ResNetAnonymizer()
    assert anonymizer.crop_size == (64, 64)
    convs = [m for m in anonymizer.modules() if isinstance(m, torch.nn.Conv2d)]
    # 7x7 in, 2 downsamplings, 6 blocks of 2 convs, 2 upsamplings, 7x7 out.
    assert len(convs) == 1 + 2 + 12 + 2 + 1
    assert [c.stride for c in convs[1:3]] == [(2, 2)] * 2
    assert convs[0].kernel_size == convs[-1].kernel_size == (7, 7)
    assert convs[3].in_channels == 128


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r'divisible by 2 \*\* num_downsamples = 4, but got \(30, 64\)'):
        ResNetAnonymizer(crop_size=(30, 64))
    with pytest.raises(ValueError, match=r'crop_size \(4, 4\) is too small'):
        ResNetAnonymizer(crop_size=(4, 4), num_downsamples=2)
    with pytest.raises(ValueError, match='num_blocks must be an int >= 0, but got -1'):
        ResNetAnonymizer(num_blocks=-1)
    with pytest.raises(ValueError, match=r'works on \(16, 16\) crops, but got crops of size \(32, 32\)'):
        ResNetAnonymizer(**SMALL)(torch.zeros(1, 3, 32, 32))


def test_builds_from_registry():
    # Earlier tests (a Runner) may have left another default scope behind.
    with DefaultScope.overwrite_default_scope('mmanon'):
        anonymizer = MODELS.build(dict(type='ResNetAnonymizer', **SMALL, in_channels=1, residual=False))
    assert isinstance(anonymizer, ResNetAnonymizer)
    assert anonymizer(torch.rand(2, 1, 16, 16) * 255).shape == (2, 1, 16, 16)
    assert not anonymizer.residual


def test_instance_norm_is_one_group_per_channel_and_no_batchnorm_base():
    anonymizer = seeded(ResNetAnonymizer, **SMALL, residual=False)
    norms = [m for m in anonymizer.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == m.num_channels for m in norms)
    # mmaction2's layer-decay optimizer constructor (VideoMAE) refuses any _NormBase, InstanceNorm2d included.
    assert not any(isinstance(m, torch.nn.modules.batchnorm._NormBase) for m in anonymizer.modules())
    x = torch.randn(3, 8, 10, 12, generator=torch.Generator().manual_seed(0)) * 5 + 2
    for affine in (True, False):
        norm = torch.nn.GroupNorm(8, 8, affine=affine)
        if affine:
            torch.nn.init.uniform_(norm.weight, 0.5, 1.5, generator=torch.Generator().manual_seed(1))
            torch.nn.init.uniform_(norm.bias, -1, 1, generator=torch.Generator().manual_seed(2))
        expected = torch.nn.functional.instance_norm(x, weight=norm.weight, bias=norm.bias, eps=norm.eps)
        torch.testing.assert_close(norm(x), expected, rtol=0, atol=1e-5)


def test_checkpoints_of_the_instance_norm_layout_load_and_compute_the_same(monkeypatch):
    from mmanon.models.anonymizers import resnet_anonymizer
    # The network as it was built before its norms became GroupNorm(C, C): InstanceNorm2d, named 'in'.
    with monkeypatch.context() as patch:
        patch.setattr(resnet_anonymizer, 'instance_norm', lambda channels, affine=True: dict(type='IN', affine=affine))
        old = seeded(ResNetAnonymizer, **SMALL, residual=False)
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in old.modules())
    with torch.no_grad():
        for name, param in old.named_parameters():
            if '.in.' in name:
                param.uniform_(0.5, 1.5)
    anonymizer = ResNetAnonymizer(**SMALL, residual=False)
    # The checkpoint check of tools/test.py and the video tool renames as loading does.
    assert check_trained_keys(anonymizer, old.state_dict(), 'old.pth') == []
    anonymizer.load_state_dict(old.state_dict())
    crops = extreme_crops()
    torch.testing.assert_close(anonymizer(crops), old(crops), rtol=0, atol=1e-3)


def relative_error(value, reference):
    """The largest difference, relative to the reference's largest element."""
    return float(((value - reference).abs().max() / reference.abs().max()).detach())


@pytest.mark.parametrize('size', [(4, 4), (5, 7), (8, 3)])
@pytest.mark.parametrize('bias,norm', [(True, False), (False, True)])
def test_upsample_conv_is_upsampling_then_convolution(size, bias, norm):
    generator = torch.Generator().manual_seed(0)
    conv = seeded(ConvModule, in_channels=5, out_channels=6, kernel_size=3, padding=1, padding_mode='reflect',
                  bias=bias, norm_cfg=instance_norm(6) if norm else None)
    for param in conv.parameters():
        param.data.normal_(generator=generator)
    x = torch.randn(3, 5, *size, generator=generator, dtype=torch.float64, requires_grad=True)
    conv = conv.double()
    grad = torch.randn(3, 6, 2 * size[0], 2 * size[1], generator=generator, dtype=torch.float64)
    inputs = [x, *conv.parameters()]
    reference = conv(torch.nn.Upsample(scale_factor=2, mode='nearest')(x))
    output = upsample_conv(x, conv)
    # The same sums in another order: float64 rounding only.
    assert relative_error(output, reference) < 1e-12
    for value, expected in zip(torch.autograd.grad(output, inputs, grad), torch.autograd.grad(reference, inputs, grad)):
        assert relative_error(value, expected) < 1e-12


def test_anonymizer_computes_its_layers_in_sequence():
    # The sub-pixel decoder and the channels-last last convolution: the values and every parameter's gradient
    # of the plain composition of the layers, to float32 rounding.
    anonymizer = seeded(ResNetAnonymizer, base_channels=8, num_blocks=2, crop_size=(16, 16))
    generator = torch.Generator().manual_seed(1)
    for param in anonymizer.parameters():
        param.data.normal_(std=0.1, generator=generator)
    crops = extreme_crops()
    grad = torch.randn(crops.shape, generator=generator)
    x = crops / 127.5 - 1
    h = anonymizer.output_conv(anonymizer.decoder(anonymizer.blocks(anonymizer.encoder(x))))
    reference = (torch.tanh(torch.atanh(x.clamp(-1 + ATANH_EPS, 1 - ATANH_EPS)) + h) + 1) * 127.5
    output = anonymizer(crops)
    assert output.is_contiguous()
    assert relative_error(output, reference) < 1e-5
    params = list(anonymizer.parameters())
    for value, expected in zip(torch.autograd.grad(output, params, grad), torch.autograd.grad(reference, params, grad)):
        assert relative_error(value, expected) < 1e-5
