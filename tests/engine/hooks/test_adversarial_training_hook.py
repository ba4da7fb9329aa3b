import copy

import pytest
import torch
from mmaction.structures import ActionDataSample
from mmengine.structures import InstanceData

from mmanon.engine.hooks import AdversarialTrainingHook
from mmanon.models import AnonymizerDataPreprocessor

NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
COLOURS = ((230, 40, 40), (40, 230, 40), (40, 40, 230), (230, 230, 40))


def fixed_faces_batch(frames=2, size=48):
    """One clip per identity, each showing that identity's face (a coloured, striped square)."""
    inputs, samples = [], []
    for identity, colour in enumerate(COLOURS):
        clip = torch.full((3, frames, size, size), 110, dtype=torch.uint8)
        face = torch.tensor(colour, dtype=torch.uint8)[:, None, None, None]
        clip[:, :, 12:36, 12:36] = face
        clip[:, :, 12:36:4, 12:36] //= 2 + identity  # a texture per identity
        inputs.append(clip)
        sample = ActionDataSample()
        sample.gt_faces = InstanceData(bboxes=torch.tensor([[12., 12., 36., 36.]]),
                                       identities=torch.tensor([identity]))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def make_players(adversarial_loss='negative_ce'):
    torch.manual_seed(0)
    return AnonymizerDataPreprocessor(
        anonymizer=dict(type='ResNetAnonymizer', base_channels=8, num_blocks=1, crop_size=(32, 32),
                        residual=False),
        discriminator=dict(type='FaceDiscriminatorHead', num_classes=4, input_size=(32, 32), base_channels=8,
                           num_stages=2, embed_dims=16),
        face_crop_size=(32, 32),
        adversarial_loss=adversarial_loss,
        adversarial_weight=1.0,
        **NORM)


def discriminator_loss(preprocessor, which):
    faces = preprocessor.train_faces
    with torch.no_grad():
        return preprocessor.discriminator.loss(getattr(faces, which), faces.identities)['loss_identity'].item()


def test_schedule():
    hook = AdversarialTrainingHook(warmup_iters=2, ramp_iters=4, adversarial_weight=2.0)
    assert [hook.weight_at(i) for i in range(8)] == [0, 0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    every_other = AdversarialTrainingHook(discriminator_steps=2)
    assert [every_other.weight_at(i) for i in range(4)] == [0, 1.0, 0, 1.0]
    with pytest.raises(ValueError, match='discriminator_steps must be an integer >= 1, got 0'):
        AdversarialTrainingHook(discriminator_steps=0)
    with pytest.raises(ValueError, match='warmup_iters must be an integer >= 0, got -1'):
        AdversarialTrainingHook(warmup_iters=-1)


def test_discriminator_steps_lower_its_loss():
    preprocessor = make_players()
    hook = AdversarialTrainingHook(discriminator_optim_wrapper=dict(optimizer=dict(type='Adam', lr=3e-3)))
    hook.build_optim_wrapper(preprocessor.discriminator)
    preprocessor(fixed_faces_batch(), True)
    before = discriminator_loss(preprocessor, 'raw') + discriminator_loss(preprocessor, 'anonymized')
    for _ in range(15):
        preprocessor(fixed_faces_batch(), True)
        scalars = hook.discriminator_step(preprocessor.discriminator, preprocessor.train_faces)
    after = discriminator_loss(preprocessor, 'raw') + discriminator_loss(preprocessor, 'anonymized')
    assert after < 0.5 * before
    assert scalars['adv_acc_raw'] == 1.0


@pytest.mark.parametrize('adversarial_loss', ['negative_ce', 'embedding', 'uniform'])
def test_anonymizer_steps_with_frozen_discriminator_raise_its_loss(adversarial_loss):
    preprocessor = make_players(adversarial_loss)
    hook = AdversarialTrainingHook(discriminator_optim_wrapper=dict(optimizer=dict(type='Adam', lr=3e-3)))
    hook.build_optim_wrapper(preprocessor.discriminator)
    for _ in range(15):  # a discriminator that knows the identities first
        preprocessor(fixed_faces_batch(), True)
        hook.discriminator_step(preprocessor.discriminator, preprocessor.train_faces)
    frozen_state = copy.deepcopy(preprocessor.discriminator.state_dict())
    optimizer = torch.optim.Adam(preprocessor.anonymizer.parameters(), lr=3e-3)

    preprocessor(fixed_faces_batch(), True)
    before = discriminator_loss(preprocessor, 'anonymized')
    for _ in range(10):
        optimizer.zero_grad()
        clips = preprocessor(fixed_faces_batch(), True)['inputs']
        # The anonymizer's adversarial loss rides on the clips' backward pass (no detector here).
        (clips * 0).sum().backward()
        # The discriminator is reached only by the zero that keeps DDP's parameter set fixed.
        assert all(not p.grad.any() for p in preprocessor.discriminator.parameters())
        optimizer.step()
    preprocessor(fixed_faces_batch(), True)
    after = discriminator_loss(preprocessor, 'anonymized')
    assert after > before + 0.5
    for name, value in preprocessor.discriminator.state_dict().items():
        assert torch.equal(value, frozen_state[name]), name
