import math

import pytest
import torch
import torch.nn as nn

from mmanon.models.heads import FaceDiscriminatorHead
from mmanon.registry import MODELS, build_in_scope

# Small enough to train in well under a second per step on a CPU.
TINY = dict(input_size=(32, 32), base_channels=8, num_stages=2, embed_dims=16)


def make_head(classifier='softmax', num_classes=4, **kwargs):
    torch.manual_seed(0)
    return FaceDiscriminatorHead(num_classes=num_classes, classifier=classifier, **dict(TINY, **kwargs))


def identity_batch(labels, size=(24, 20), seed=0):
    """Crops of one constant colour per identity, with noise."""
    generator = torch.Generator().manual_seed(seed)
    colours = torch.tensor([[200., 50., 50.], [50., 200., 50.], [50., 50., 200.], [200., 200., 50.]])
    noise = torch.randn(len(labels), 3, *size, generator=generator) * 20
    return (colours[labels.clamp(min=0)][:, :, None, None] + noise).clamp(0, 255)


@pytest.mark.parametrize('size', [(112, 96), (24, 20), (200, 150), (7, 9)])
def test_embedding_shape_for_any_crop_size(size):
    head = FaceDiscriminatorHead(num_classes=5)
    crops = torch.rand(3, 3, *size) * 255
    embeddings, probabilities = head.predict(crops)
    assert embeddings.shape == (3, 128)
    assert probabilities.shape == (3, 5)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(3))


def test_resizing_is_differentiable():
    head = make_head()
    crops = (torch.rand(2, 3, 50, 40) * 255).requires_grad_()
    head(crops).sum().backward()
    assert crops.grad is not None and crops.grad.abs().sum() > 0


def test_no_batch_norm():
    head = FaceDiscriminatorHead(num_classes=3, num_blocks=2)
    assert not any(isinstance(m, nn.modules.batchnorm._NormBase) for m in head.modules())
    # Without batch statistics a sample's embedding does not depend on the rest of its batch.
    crops = torch.rand(4, 3, 112, 96) * 255
    head.train()
    torch.testing.assert_close(head(crops)[:1], head(crops[:1]))


def test_state_dict_holds_weights_only():
    assert not {'mean', 'std'} & set(make_head().state_dict())


@pytest.fixture
def single_thread():
    # Tiny convolutions gain nothing from intra-op threads, and on a busy machine the threads' spinning
    # makes them many times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize('classifier', ['softmax', 'arcface'])
def test_training_separates_identities(classifier, single_thread):
    head = make_head(classifier)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    labels = torch.arange(4).repeat(4)
    losses = []
    for step in range(40):
        result = head.loss(identity_batch(labels, seed=step), labels)
        optimizer.zero_grad()
        result['loss_identity'].backward()
        optimizer.step()
        losses.append(result['loss_identity'].item())
    result = head.loss(identity_batch(labels, seed=1000), labels)
    assert result['loss_identity'].item() < 0.1 * losses[0]
    assert result['acc_identity'].item() == 1.0
    assert not result['acc_identity'].requires_grad


def test_arcface_margin_only_on_target_and_only_with_labels():
    head = make_head('arcface', num_classes=3, margin=0.5, scale=30.0)
    embeddings = torch.randn(6, 16)
    labels = torch.tensor([0, 1, 2, 0, -1, 2])
    cosine = nn.functional.normalize(embeddings, dim=1) @ nn.functional.normalize(head.fc_cls.weight, dim=1).t()

    torch.testing.assert_close(head.logits(embeddings), 30.0 * cosine)
    with_margin = head.logits(embeddings, labels)
    known = labels >= 0
    rows = known.nonzero(as_tuple=True)[0]
    target = with_margin[rows, labels[rows]]
    theta = torch.acos(cosine[rows, labels[rows]])
    expected = torch.where(theta <= math.pi - 0.5, torch.cos(theta + 0.5),
                           cosine[rows, labels[rows]] - (1 - math.cos(0.5)))
    torch.testing.assert_close(target, 30.0 * expected, atol=1e-4, rtol=1e-4)
    assert (target < 30.0 * cosine[rows, labels[rows]]).all()
    untouched = torch.ones_like(cosine, dtype=torch.bool)
    untouched[rows, labels[rows]] = False
    torch.testing.assert_close(with_margin[untouched], 30.0 * cosine[untouched])


def test_arcface_target_logit_is_monotonic_in_the_angle():
    head = make_head('arcface', num_classes=2, margin=0.5, scale=1.0)
    theta = torch.linspace(0, math.pi, 200)
    # Embeddings at angle theta from the class-0 weight, in the plane of the two class weights.
    with torch.no_grad():
        head.fc_cls.weight.zero_()
        head.fc_cls.weight[0, 0] = 1
        head.fc_cls.weight[1, 1] = 1
    embeddings = torch.zeros(200, 16)
    embeddings[:, 0], embeddings[:, 1] = torch.cos(theta), torch.sin(theta)
    target = head.logits(embeddings, torch.zeros(200, dtype=torch.long))[:, 0]
    assert (target.diff() < 0).all()


def test_unknown_identities_are_ignored():
    head = make_head()
    labels = torch.tensor([0, 1, -1, 3])
    crops = identity_batch(labels)
    result = head.loss(crops, labels)
    known = head.loss(crops[labels >= 0], labels[labels >= 0])
    torch.testing.assert_close(result['loss_identity'], known['loss_identity'])
    torch.testing.assert_close(result['acc_identity'], known['acc_identity'])


@pytest.mark.parametrize('classifier', ['softmax', 'arcface'])
def test_groups_in_one_pass_match_one_call_per_group(classifier):
    head = make_head(classifier, loss_weight=0.5)
    raw = identity_batch(torch.tensor([0, 2, 0, 3, 2]))
    # Labels that the head predicts for the raw crops, and anonymized crops of other colours, so that the two
    # groups' accuracies differ.
    labels = head.predict(raw)[1].argmax(dim=1)
    labels[2] = -1
    anonymized = identity_batch(torch.tensor([2, 0, 0, 3, 0]), seed=1)
    params = list(head.parameters())
    separate = [head.loss(crops, labels) for crops in (raw, anonymized)]
    expected = separate[0]['loss_identity'] + separate[1]['loss_identity']
    expected_grads = torch.autograd.grad(expected, params)
    grouped = head.loss([raw, anonymized], labels)
    grads = torch.autograd.grad(grouped['loss_identity'], params)
    torch.testing.assert_close(grouped['loss_identity'], expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(grouped['acc_identity'], torch.stack([r['acc_identity'] for r in separate]))
    assert grouped['acc_identity'][0] == 1 and grouped['acc_identity'][1] < 1
    # The same sums in another order: equal to float rounding, relative to each gradient's scale.
    for grad, reference in zip(grads, expected_grads):
        torch.testing.assert_close(grad, reference, rtol=0, atol=1e-5 * reference.abs().max().item())
    none_known = head.loss([raw[:2], anonymized[:2]], torch.tensor([-1, -1]))
    assert none_known['loss_identity'].item() == 0 and none_known['acc_identity'].tolist() == [0, 0]


@pytest.mark.parametrize('classifier', ['softmax', 'arcface'])
@pytest.mark.parametrize('labels', [torch.zeros(0, dtype=torch.long), torch.tensor([-1, -1])])
def test_no_known_face_gives_zero_loss_that_can_backward(classifier, labels):
    head = make_head(classifier)
    result = head.loss(torch.rand(len(labels), 3, 20, 20) * 255, labels)
    assert result['loss_identity'].item() == 0
    assert result['acc_identity'].item() == 0
    result['loss_identity'].backward()
    assert all(p.grad is not None for p in head.parameters())


def test_builds_from_registry():
    head = build_in_scope(MODELS, dict(type='FaceDiscriminatorHead', num_classes=7, classifier='arcface'))
    assert isinstance(head, FaceDiscriminatorHead)
    assert MODELS.get('FaceDiscriminatorHead') is FaceDiscriminatorHead


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_classes=1), 'num_classes must be at least 2'),
    (dict(num_classes=3, classifier='cosface'), "classifier must be one of"),
    (dict(num_classes=3, input_size=(100, 96)), 'multiple of 2 \\*\\* num_stages = 16'),
    (dict(num_classes=3, input_size=(64, 64), num_stages=7), 'got \\(64, 64\\)'),
    (dict(num_classes=3, mean=(0., 0.)), 'one value per channel'),
    (dict(num_classes=3, classifier='arcface', margin=2.0), 'margin=2.0'),
])
def test_invalid_arguments_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FaceDiscriminatorHead(**kwargs)


def test_invalid_inputs_are_explained():
    head = make_head()
    with pytest.raises(ValueError, match=r'crops must be \(N, 3, h, w\)'):
        head(torch.rand(2, 1, 20, 20))
    with pytest.raises(ValueError, match='labels must be below num_classes=4'):
        head.loss(torch.rand(1, 3, 20, 20), torch.tensor([4]))
    with pytest.raises(ValueError, match=r'labels must be \(2,\) for 2 crops'):
        head.loss([torch.rand(1, 3, 20, 20), torch.rand(2, 3, 20, 20)], torch.tensor([0]))
