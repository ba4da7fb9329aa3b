import glob
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmaction.models import ActionDataPreprocessor
from mmaction.structures import ActionDataSample
from mmengine.config import Config
from mmengine.structures import InstanceData

from mmanon.models import AnonymizerDataPreprocessor
from mmanon.models.data_preprocessors import FaceBatch
from mmanon.models.utils import enlarge_regions, head_regions
from mmanon.registry import MODELS

REPO = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
ANONYMIZER_CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs/_base_/anonymizers/*.py')))
NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], format_shape='NCTHW')


def make_batch(num_clips=2, frames=4, height=48, width=64, persons=((4, 6, 30, 46), (34, 2, 60, 40)), seed=0):
    generator = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(num_clips):
        inputs.append(torch.randint(0, 256, (3, frames, height, width), generator=generator, dtype=torch.uint8))
        sample = ActionDataSample()
        boxes = torch.tensor(persons, dtype=torch.float32).reshape(-1, 4)
        sample.gt_instances = InstanceData(bboxes=boxes, labels=torch.zeros(len(boxes), 6),
                                           identities=torch.arange(len(boxes)))
        sample.proposals = InstanceData(bboxes=boxes.clone())
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def region_mask(data, margin=2.0, head_ratio=0.25):
    n, _, _, height, width = (len(data['inputs']), *data['inputs'][0].shape)
    mask = torch.zeros(n, height, width, dtype=torch.bool)
    for i, sample in enumerate(data['data_samples']):
        regions, valid = enlarge_regions(head_regions(sample.gt_instances.bboxes, head_ratio), margin, height,
                                         width)
        for x1, y1, x2, y2 in regions[valid].tolist():
            mask[i, y1:y2, x1:x2] = True
    return mask[:, None, None].expand(-1, 3, data['inputs'][0].shape[1], -1, -1)


@pytest.mark.parametrize('config', ANONYMIZER_CONFIGS, ids=lambda p: osp.basename(p)[:-3])
def test_only_face_regions_change(config):
    anonymizer = Config.fromfile(config).anonymizer
    stock = ActionDataPreprocessor(**NORM)
    ours = AnonymizerDataPreprocessor(anonymizer=anonymizer, **NORM)
    for training in (True, False):
        data = make_batch()
        expected = stock(make_batch(), training)['inputs']
        out = ours(data, training)['inputs']
        mask = region_mask(data)
        assert out.shape == expected.shape
        assert torch.equal(out[~mask], expected[~mask]), 'pixels outside the face regions changed'
        changed = (out != expected)[mask].float().mean().item()
        if anonymizer['type'] == 'IdentityAnonymizer':
            assert changed == 0
        elif anonymizer['type'] != 'ResNetAnonymizer':
            # (The learned one starts as the identity by design; see the residual=False test below.)
            assert changed > 0.9, f'only {changed:.0%} of the face pixels changed'


def test_learned_anonymizer_changes_every_face_pixel_once_it_is_not_the_identity():
    ours = AnonymizerDataPreprocessor(anonymizer=dict(type='ResNetAnonymizer', residual=False), **NORM)
    data = make_batch()
    expected = ActionDataPreprocessor(**NORM)(make_batch(), True)['inputs']
    out = ours(data, True)['inputs']
    mask = region_mask(data)
    assert torch.equal(out[~mask], expected[~mask])
    assert (out != expected)[mask].float().mean().item() > 0.99


def test_face_boxes_win_over_person_boxes_and_regions_are_one_box_per_clip():
    data = make_batch(frames=5)
    face = torch.tensor([[20., 20., 28., 30.]])
    for sample in data['data_samples']:
        sample.gt_faces = InstanceData(bboxes=face, identities=torch.tensor([3]))
    ours = AnonymizerDataPreprocessor(anonymizer=dict(type='SolidMask', fill=0), feather=0., mean=[0, 0, 0],
                                      std=[1, 1, 1])
    out = ours(data, True)['inputs']
    # margin 2 around (20, 20, 28, 30): x 16..32, y 15..35, in every one of the 5 frames.
    assert (out[:, :, :, 15:35, 16:32] == 0).all()
    outside = torch.ones_like(out, dtype=torch.bool)
    outside[:, :, :, 15:35, 16:32] = False
    assert torch.equal(out[outside], torch.stack(data['inputs']).float()[outside])
    faces = ours.train_faces
    assert faces.identities.tolist() == [3, 3] and faces.raw.shape == (2, 3, 64, 64)
    assert (faces.anonymized == 0).all()


def moving_tubes(frames, step=(6., 2.)):
    """Two faces crossing the frame, one box per frame; the second is unseen in the first two frames."""
    t = torch.arange(frames, dtype=torch.float32)[:, None]
    first = torch.tensor([[4., 8., 12., 18.]]) + t * torch.tensor([step * 2])
    second = torch.tensor([[50., 30., 58., 40.]]) - t * torch.tensor([step * 2])
    second[:2] = float('nan')
    return torch.stack([first, second])


def test_face_tubes_are_anonymized_at_each_frame_s_own_region():
    data = make_batch(frames=6)
    tubes = moving_tubes(6)
    for sample in data['data_samples']:
        sample.face_tubes = InstanceData(bboxes=tubes)
        # The keyframe's faces are still what the discriminator sees, but the tubes are what is anonymized.
        sample.gt_faces = InstanceData(bboxes=tubes[:1, 3], identities=torch.tensor([2]))
    ours = AnonymizerDataPreprocessor(anonymizer=dict(type='SolidMask', fill=0), feather=0., mean=[0, 0, 0],
                                      std=[1, 1, 1])
    out = ours(data, True)['inputs']
    regions, valid = enlarge_regions(tubes, 2.0, 48, 64)
    inside = torch.zeros(6, 48, 64, dtype=torch.bool)
    for tube in regions:
        for t, (x1, y1, x2, y2) in enumerate(tube.tolist()):
            inside[t, y1:y2, x1:x2] = True
    # One region size per tube: 16 x 20 for the first face, which moves 6 pixels a frame.
    assert regions[0, :, 2:].sub(regions[0, :, :2]).unique(dim=0).tolist() == [[16, 20]]
    assert valid.tolist() == [[True] * 6, [False, False] + [True] * 4]
    inside = inside[None, None].expand_as(out)
    assert (out[inside] == 0).all()
    assert torch.equal(out[~inside], torch.stack(data['inputs']).float()[~inside])
    x1, y1, x2, y2 = tubes[0, 3].tolist()
    key_face = torch.stack(data['inputs'])[:, :, 3, int(y1):int(y2), int(x1):int(x2)].float()
    assert torch.allclose(ours.train_faces.raw, F.interpolate(key_face, (64, 64), mode='bilinear'))


def test_learned_anonymizer_gets_gradients_through_moving_regions():
    data = make_batch(frames=6)
    for sample in data['data_samples']:
        sample.face_tubes = InstanceData(bboxes=moving_tubes(6))
    ours = AnonymizerDataPreprocessor(anonymizer=dict(type='ResNetAnonymizer', residual=False, base_channels=8,
                                                      num_blocks=1), **NORM)
    ours(data, True)['inputs'].sum().backward()
    grads = [p.grad for p in ours.anonymizer.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_face_tubes_of_the_wrong_shape_are_refused():
    data = make_batch(frames=4)
    data['data_samples'][0].face_tubes = InstanceData(bboxes=moving_tubes(5))
    with pytest.raises(ValueError, match=r'face_tubes.bboxes must have shape \(K, 4, 4\)'):
        AnonymizerDataPreprocessor(**NORM)(data, False)


def test_edge_cases_zero_faces_outside_frame_one_pixel_and_single_frame():
    ours = AnonymizerDataPreprocessor(anonymizer=dict(type='GaussianBlur', kernel_size=5), **NORM)
    stock = ActionDataPreprocessor(**NORM)
    cases = {
        'no faces': make_batch(persons=()),
        'outside the frame': make_batch(persons=((100, 100, 120, 140), )),
        'one pixel': make_batch(persons=((10, 10, 10.5, 14), )),
        'T = 1': make_batch(frames=1),
    }
    for name, data in cases.items():
        for training in (True, False):
            out = ours(data, training)['inputs']
            assert out.shape == (2, 3, data['inputs'][0].shape[1], 48, 64), name
            if name in ('no faces', 'outside the frame'):
                assert torch.equal(out, stock(data, training)['inputs']), name
    assert ours.skipped_regions > 0  # the region outside the frame was counted


def test_evaluation_attaches_faces_for_the_metrics():
    ours = AnonymizerDataPreprocessor(
        anonymizer=dict(type='Pixelate', block_size=4),
        discriminator=dict(type='FaceDiscriminatorHead', num_classes=4, input_size=(32, 32), embed_dims=16),
        face_crop_size=(32, 32),
        **NORM)
    data = ours(make_batch(), False)
    for sample in data['data_samples']:
        faces = sample.faces
        assert faces.identities.tolist() == [0, 1]
        assert faces.raw_crops.dtype == torch.uint8 and faces.raw_crops.shape == (2, 3, 32, 32)
        assert not torch.equal(faces.raw_crops, faces.anonymized_crops)
        assert faces.raw_embeddings.shape == faces.anonymized_embeddings.shape == (2, 16)


def smoke_detector(anonymizer, **preprocessor):
    cfg = Config.fromfile(osp.join(REPO, 'configs/detection/slowonly/slowonly_r18-smoke_1xb2-4x2x1-4i_ava-fixture-rgb.py'))
    cfg.model.data_preprocessor = dict(cfg.model.data_preprocessor, type='mmanon.AnonymizerDataPreprocessor',
                                       anonymizer=anonymizer, **preprocessor)
    cfg.model.roi_head.bbox_head.dropout_ratio = 0
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmaction'):
        return MODELS.build(cfg.model)


def detector_batch(height=64, width=80):
    data = make_batch(height=height, width=width, persons=((4, 6, 30, 60), (40, 2, 76, 62)))
    for sample in data['data_samples']:
        sample.gt_instances.labels = torch.zeros(2, 6)
        sample.gt_instances.labels[:, 1] = 1
        sample.set_metainfo(dict(img_shape=(height, width)))
    return data


@pytest.mark.parametrize('residual', [False, True])
def test_detection_loss_reaches_every_anonymizer_parameter(residual):
    model = smoke_detector(dict(type='ResNetAnonymizer', base_channels=8, num_blocks=2, residual=residual))
    anonymizer = model.data_preprocessor.anonymizer
    optimizer = torch.optim.SGD(anonymizer.parameters(), lr=0.1)
    for step in range(1 if not residual else 2):
        optimizer.zero_grad()
        data = model.data_preprocessor(detector_batch(), True)
        losses = model(**data, mode='loss')
        losses['loss_action_cls'].backward()
        grads = {name: p.grad for name, p in anonymizer.named_parameters()}
        if residual and step == 0:
            # The residual form starts as the identity: its zeroed last convolution is what learns first.
            assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if 'output_conv' in n)
            optimizer.step()
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values()), \
        [n for n, g in grads.items() if g is None or g.abs().sum() == 0]


def test_stock_detector_train_and_test_step():
    from mmengine.optim import OptimWrapper
    model = smoke_detector(dict(type='GaussianBlur', kernel_size=7))
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    log_vars = model.train_step(detector_batch(), wrapper)
    assert torch.isfinite(log_vars['loss'])
    model.eval()
    data = detector_batch()
    data['inputs'], data['data_samples'] = data['inputs'][:1], data['data_samples'][:1]
    (result, ) = model.test_step(data)
    assert result.pred_instances.bboxes.shape[0] == 2 and result.pred_instances.scores.shape == (2, 6)
    assert 'faces' in result


class ScaledChange(torch.nn.Module):
    """A test anonymizer: ``x + gain * (x - 128) + offset``, whose frame-to-frame change is ``1 + gain`` times
    the raw change; ``offset`` (1, C, h, w) is a fixed pattern added to every frame."""

    def __init__(self, gain=0., offset=None):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(float(gain)))
        self.offset = torch.nn.Parameter(torch.zeros(1, 3, 1, 1) if offset is None else offset)

    def forward(self, crops):
        return crops + self.gain * (crops - 128) + self.offset


def temporal_batch():
    """One clip with two face tubes (T = 5, margin 1 so that regions are the boxes): the first moves by (2, 1)
    pixels a frame and has no box in frame 2; the second moves right and is clipped by the frame's right edge in
    frame 4 (a region of another size). Consecutive pairs of a region size: (0, 1) and (3, 4) of the first (not
    (1, 3) across the gap), (0, 1), (1, 2), (2, 3) of the second (not (3, 4))."""
    inputs = torch.randint(0, 256, (3, 5, 40, 48), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    first = torch.tensor([[4. + 2 * t, 6. + t, 14. + 2 * t, 18. + t] for t in range(5)])
    first[2] = float('nan')
    second = torch.tensor([[30. + 2 * t, 20., 42. + 2 * t, 30.] for t in range(5)])
    sample = ActionDataSample()
    sample.face_tubes = InstanceData(bboxes=torch.stack([first, second]))
    pairs = [(first, 0), (first, 3), (second, 0), (second, 1), (second, 2)]
    return dict(inputs=[inputs], data_samples=[sample]), pairs


def temporal_preprocessor(anonymizer, weight=2.0):
    preprocessor = AnonymizerDataPreprocessor(margin=1.0, temporal_weight=weight, mean=[0, 0, 0], std=[1, 1, 1])
    preprocessor.anonymizer = anonymizer
    return preprocessor


@pytest.mark.parametrize('gain', [2.0, -3.0, 0.5])
def test_temporal_loss_is_the_excess_change_over_consecutive_frames_of_each_tube(gain):
    data, pairs = temporal_batch()
    clip = data['inputs'][0].float()
    preprocessor = temporal_preprocessor(ScaledChange(gain))
    preprocessor(data, True)
    losses = preprocessor.pop_losses()
    assert set(losses) == {'loss_temporal'}
    # By hand: the region's raw pixels in frames t and t + 1 of each pair, the anonymized change |1 + gain|
    # times the raw one, so the excess is max(0, |1 + gain| - 1) times it.
    excess, count = 0., 0
    for tube, t in pairs:
        (x1, y1, x2, y2), (u1, v1, u2, v2) = tube[t].long().tolist(), tube[t + 1].long().tolist()
        raw_change = (clip[:, t + 1, v1:v2, u1:u2] - clip[:, t, y1:y2, x1:x2]).abs()
        excess += (max(0., abs(1 + gain) - 1) * raw_change).sum().item()
        count += raw_change.numel()
    expected = 2.0 * excess / count / 255
    torch.testing.assert_close(losses['loss_temporal'].item(), expected, rtol=1e-5, atol=0.)
    assert (expected > 0) == (abs(1 + gain) > 1)
    # Its gradient in the gain: 2 / 255 * mean(sign(1 + gain) * |raw change|) where the excess is positive.
    (grad, ) = torch.autograd.grad(losses['loss_temporal'], [preprocessor.anonymizer.gain])
    expected_grad = expected / (abs(1 + gain) - 1) * (1 if gain > 0 else -1) if expected else 0.
    torch.testing.assert_close(grad.item(), expected_grad, rtol=1e-5, atol=1e-12)


def test_temporal_loss_is_zero_for_a_constant_change_a_constant_fill_and_a_smoothing():
    data, _ = temporal_batch()
    pattern = (torch.randn(1, 3, 1, 1, generator=torch.Generator().manual_seed(0)) * 40).round()  # exact sums
    for name, anonymizer in dict(identity=ScaledChange(), fixed_pattern=ScaledChange(0., pattern),
                                 fill=ScaledChange(-1., pattern), smoothing=ScaledChange(-0.6, pattern)).items():
        preprocessor = temporal_preprocessor(anonymizer)
        preprocessor(data, True)
        loss = preprocessor.pop_losses()['loss_temporal']
        assert loss.item() == 0, name
        # A loss with gradient (zero), so that the optimizer wrapper treats it like the others.
        assert loss.requires_grad, name


def test_temporal_loss_gradient_passes_gradcheck():
    """The term's gradient in the anonymized crops, against finite differences in float64: two crops, one of
    them with a gap between its frames 1 and 3."""
    generator = torch.Generator().manual_seed(0)
    crops = [torch.rand(4, 3, 5, 6, generator=generator, dtype=torch.float64) * 255 for _ in range(2)]
    patches = [(c + torch.randn(c.shape, generator=generator, dtype=torch.float64) * 30).requires_grad_()
               for c in crops]
    frames = [torch.tensor([0, 1, 3, 4]), torch.arange(4)]
    preprocessor = AnonymizerDataPreprocessor(temporal_weight=2.0, **NORM)
    no_faces = torch.zeros(0, 3, 8, 8, dtype=torch.float64)
    faces = FaceBatch(no_faces, no_faces, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))

    def loss(*patches):
        return preprocessor.anonymizer_losses(faces, crops, list(patches), frames)['loss_temporal']

    assert loss(*patches) > 0
    assert torch.autograd.gradcheck(loss, patches)
    # Rows 1 and 2 of the first crop (frames 1 and 3) are no pair: the same as two crops of frames 0, 1 and 3, 4.
    split = preprocessor.anonymizer_losses(faces, [*crops[0].split(2), crops[1]], [*patches[0].split(2), patches[1]],
                                           [torch.tensor([0, 1]), torch.tensor([3, 4]), frames[1]])
    torch.testing.assert_close(split['loss_temporal'], loss(*patches), rtol=1e-12, atol=0.)


def test_temporal_weight_is_validated():
    with pytest.raises(ValueError, match='temporal_weight must be >= 0, got -1'):
        AnonymizerDataPreprocessor(temporal_weight=-1, **NORM)
