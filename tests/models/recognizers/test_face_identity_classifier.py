"""FaceIdentityClassifier: its modes, pre-training with tools/train.py on generated faces, and loading the
checkpoint into the adversarial config's discriminator with the documented overlay line."""
import argparse
import os.path as osp

import numpy as np
import pytest
import torch
from mmaction.registry import MODELS as ACTION_MODELS
from mmaction.structures import ActionDataSample
from mmengine.config import Config, DictAction
from mmengine.registry import DefaultScope

from mmanon.compat import load_local_checkpoint
from mmanon.datasets.toy_faces import ToyFacesSpec, generate_toy_faces
from mmanon.evaluation.attackers import build_attacker
from mmanon.registry import MODELS, build_in_scope

TOY_CONFIG = 'configs/face_identity/face-discriminator_1xb16-10e_toy-faces-32x32.py'
CASIA_CONFIG = 'configs/face_identity/face-discriminator_1xb64-20e_casia-webface-112x96.py'
ADVERSARIAL_CONFIG = 'configs/detection/slowonly/slowonly-adversarial_r18_1xb8-4x6x1-600i_toy-ava-rgb.py'
REPO = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
TINY_HEAD = dict(type='FaceDiscriminatorHead', num_classes=5, input_size=(16, 16), base_channels=4, num_stages=2,
                 embed_dims=8)


def overlay(checkpoint):
    """The ``--cfg-options`` of the README, parsed as tools/train.py parses them (mmengine's DictAction cannot
    parse a ``key=dict(...)`` value, hence one key per field)."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    key = 'model.data_preprocessor.discriminator.init_cfg'
    return parser.parse_args(['--cfg-options', f'{key}.type=Pretrained', f'{key}.checkpoint={checkpoint}',
                              f'{key}.prefix=head.']).cfg_options


def test_loss_predict_and_tensor_modes():
    torch.manual_seed(0)
    model = build_in_scope(MODELS, dict(type='FaceIdentityClassifier', head=TINY_HEAD))
    crops = [torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8) for _ in range(3)]
    samples = [ActionDataSample().set_gt_label(label) for label in (0, 4, 2)]
    data = model.data_preprocessor(dict(inputs=crops, data_samples=samples), training=True)
    # Stacked into float pixels, not normalised: the head normalises them itself.
    assert data['inputs'].dtype == torch.float32 and data['inputs'].shape == (3, 3, 16, 16)
    torch.testing.assert_close(data['inputs'], torch.stack(crops).float())

    losses = model(**data, mode='loss')
    assert set(losses) == {'loss_identity', 'acc_identity'} and losses['loss_identity'].requires_grad
    expected = model.head.loss(data['inputs'], torch.tensor([0, 4, 2]))
    torch.testing.assert_close(losses['loss_identity'], expected['loss_identity'])

    predicted = model(**data, mode='predict')
    scores = torch.stack([sample.pred_score for sample in predicted])
    assert scores.shape == (3, 5)
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(3))
    assert [sample.pred_label.item() for sample in predicted] == scores.argmax(dim=1).tolist()

    embeddings = model(data['inputs'])
    assert embeddings.shape == (3, 8)
    with pytest.raises(ValueError, match="mode must be 'loss', 'predict' or 'tensor'"):
        model(data['inputs'], mode='features')


def test_casia_config_builds_the_discriminator_of_the_adversarial_configs():
    cfg = Config.fromfile(osp.join(REPO, CASIA_CONFIG))
    adversarial = Config.fromfile(osp.join(REPO, 'configs/_base_/adversarial/ava_adversarial.py'))
    head = dict(cfg.model.head)
    discriminator = dict(adversarial.adversarial_preprocessor.discriminator)
    assert head.pop('num_classes') == 10575 and discriminator.pop('num_classes') != 10575
    assert head == discriminator


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory, run_tool):
    """One epoch of the toy pre-training config through tools/train.py, on a few generated identities."""
    root = tmp_path_factory.mktemp('pretrain')
    generate_toy_faces(str(root / 'data' / 'toy_faces'),
                       ToyFacesSpec(num_identities=4, images_per_identity=3, val_images_per_identity=1,
                                    image_size=(64, 64)))
    out = run_tool(['tools/train.py', TOY_CONFIG, '--work-dir', 'work', '--cfg-options', 'train_cfg.max_epochs=1',
                    'train_cfg.val_interval=1', 'train_dataloader.batch_size=4'], root, env=dict(OMP_NUM_THREADS='1'))
    return str(root / 'work' / 'epoch_1.pth'), out.stdout + out.stderr


def test_pretraining_trains_and_validates(pretrained):
    checkpoint, log = pretrained
    assert 'Epoch(train) [1][2/2]' in log and 'loss_identity' in log
    assert 'Epoch(val) [1][1/1]' in log and 'acc/top1' in log
    state = load_local_checkpoint(checkpoint)['state_dict']
    assert state and all(key.startswith('head.') for key in state)


def test_checkpoint_loads_into_the_discriminator_with_the_overlay_line(pretrained):
    checkpoint, _ = pretrained
    cfg = Config.fromfile(osp.join(REPO, ADVERSARIAL_CONFIG))
    cfg.merge_from_dict(overlay(checkpoint))
    discriminator = build_in_scope(MODELS, cfg.model.data_preprocessor.discriminator)
    before = {name: value.clone() for name, value in discriminator.state_dict().items()}
    discriminator.init_weights()
    saved = load_local_checkpoint(checkpoint)['state_dict']
    assert {f'head.{name}' for name in before} == set(saved)
    for name, value in discriminator.state_dict().items():
        assert torch.equal(value, saved[f'head.{name}']), name
        assert not torch.equal(value, before[name]), f'{name} was not loaded'


def test_overlay_line_initialises_the_discriminator_of_the_whole_detector(pretrained):
    checkpoint, _ = pretrained
    cfg = Config.fromfile(osp.join(REPO, ADVERSARIAL_CONFIG))
    cfg.merge_from_dict(overlay(checkpoint))
    with DefaultScope.overwrite_default_scope('mmaction'):
        detector = ACTION_MODELS.build(cfg.model)
    detector.init_weights()
    saved = load_local_checkpoint(checkpoint)['state_dict']
    for name, value in detector.data_preprocessor.discriminator.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), saved[f'head.{name}'].numpy(), err_msg=name)


def test_pretrained_classifier_serves_as_a_checkpoint_attacker(pretrained):
    checkpoint, _ = pretrained
    attacker = build_attacker(dict(type='checkpoint', checkpoint=checkpoint))
    saved = load_local_checkpoint(checkpoint)['state_dict']
    for name, value in attacker.head.state_dict().items():
        assert torch.equal(value, saved[f'head.{name}']), name
    crops = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        expected = attacker.head(crops.float()).numpy()
    np.testing.assert_allclose(attacker.embed(crops), expected, rtol=1e-5, atol=1e-6)
