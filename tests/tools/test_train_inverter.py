"""tools/analysis/train_inverter.py: the inverter undoes a reversible anonymizer, so that the inverted attacker
re-identifies what the anonymizer hid from a recogniser of raw faces; it cannot undo a solid mask; it is
deterministic and explains bad arguments."""
import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmanon.apis.faces import collect_faces, crop_faces, face_loader, load_detector
from mmanon.evaluation.metrics import FacePrivacyMetric
from mmanon.models.anonymizers.base_anonymizer import BaseAnonymizer
from mmanon.registry import MODELS
from face_configs import write_face_config, write_stand_in_faces_config  # noqa: I100  (tests/tools is on sys.path)

import train_attacker  # noqa: E402,I100  (tools/analysis is on sys.path, see conftest.py)
import train_inverter  # noqa: E402

FAST = ['--num-workers', '0', '--device', 'cpu', '--batch-size', '8']


@MODELS.register_module(name='ColourNegative', force=True)
class ColourNegative(BaseAnonymizer):
    """Turns each face into its colour negative: unlike the face to a recogniser of raw faces, and reversible."""

    def anonymize(self, crops):
        return 255 - crops


@pytest.fixture(scope='module')
def stand_in(tmp_path_factory):
    """Stand-in faces (four identities of distinct colours) and a recogniser trained on their raw crops."""
    tmp_path = tmp_path_factory.mktemp('inverter')
    faces = write_stand_in_faces_config(tmp_path / 'faces.py')
    raw_face = tmp_path / 'raw_face.pth'
    assert train_attacker.main([write_face_config(tmp_path / 'raw.py'), '--face-dataset', faces, '--faces', 'raw',
                                '--out', str(raw_face), '--epochs', '10', *FAST]) == 0
    return dict(tmp_path=tmp_path, faces=faces, raw_face=str(raw_face))


def train(stand_in, anonymizer, *flags, name='inverter.pth'):
    config = write_face_config(stand_in['tmp_path'] / f'{anonymizer}.py', anonymizer=anonymizer)
    out = stand_in['tmp_path'] / name
    assert train_inverter.main([config, '--face-dataset', stand_in['faces'], '--embedder', stand_in['raw_face'],
                                '--out', str(out), '--val-fraction', '0.3', *FAST, *flags]) == 0
    return config, str(out), torch.load(out, map_location='cpu', weights_only=True)


def privacy(stand_in, config, inverter):
    """The metric on the stand-in validation faces: the recogniser of raw faces on the anonymized faces as they
    are, and on the faces the inverter restored."""
    model = load_detector(Config.fromfile(config))
    faces = collect_faces(face_loader(Config.fromfile(stand_in['faces']), 'val', 0),
                          crop_faces(model.data_preprocessor.anonymizer, 'cpu'), progress=False)
    recogniser = dict(type='checkpoint', checkpoint=stand_in['raw_face'], name='raw-face')
    metric = FacePrivacyMetric(attackers=[recogniser, dict(type='inverted', inverter=inverter, attacker=recogniser)])
    metric.dataset_meta = {}
    metric.process({}, [dict(faces=faces.to_dict())])
    return metric.evaluate(1)


def test_undoes_a_reversible_anonymizer(stand_in):
    config, inverter, saved = train(stand_in, 'ColourNegative', '--epochs', '25')
    meta = saved['meta']
    assert saved['config']['type'] == 'UNetInverter' and saved['config']['crop_size'] == [16, 16]
    assert meta['anonymizer'] == 'ColourNegative' and meta['embedder'] == stand_in['raw_face']
    assert meta['train_faces'] + meta['held_out_faces'] == 40
    # The restored held-out faces are far nearer the raw ones than their negatives, in pixels and to the
    # recogniser.
    assert meta['held_out']['pixel'] < meta['held_out_anonymized']['pixel'] / 3
    assert meta['held_out']['identity'] > meta['held_out_anonymized']['identity'] + 0.3
    results = privacy(stand_in, config, inverter)
    # The negatives fool the recogniser of raw faces in its raw gallery; restored, they are all re-identified.
    assert results['privacy/raw-face/raw_gallery/top1'] <= 0.5
    assert results['privacy/inverted-raw-face/raw_gallery/top1'] == 1.0
    # (The negatives of one person all alike, an anonymized gallery re-identifies them too.)
    assert results['privacy/raw-face/anon_gallery/top1'] == 1.0


def test_cannot_undo_a_solid_mask(stand_in):
    config, inverter, _ = train(stand_in, 'SolidMask', '--epochs', '3')
    results = privacy(stand_in, config, inverter)
    # Every masked face is the same black square, so every restored face is the same picture: each protocol of
    # the inverted attacker is at chance exactly (ties count fractionally).
    for protocol in ('raw_gallery', 'anon_gallery', 'train_gallery'):
        assert results[f'privacy/inverted-raw-face/{protocol}/top1'] == pytest.approx(0.25), protocol


def test_same_seed_same_inverter(stand_in):
    first = train(stand_in, 'GaussianBlur', '--epochs', '2', '--seed', '3', name='a.pth')[2]
    second = train(stand_in, 'GaussianBlur', '--epochs', '2', '--seed', '3', name='b.pth')[2]
    other = train(stand_in, 'GaussianBlur', '--epochs', '2', '--seed', '4', name='c.pth')[2]
    assert first['meta']['held_out'] == second['meta']['held_out']
    for name, value in first['state_dict'].items():
        assert torch.equal(value, second['state_dict'][name]), name
    assert any(not torch.equal(value, other['state_dict'][name]) for name, value in first['state_dict'].items())
    assert np.isclose(first['meta']['identity_weight'], 1.0)


def test_clear_errors(stand_in, capsys):
    config = write_face_config(stand_in['tmp_path'] / 'blur.py', anonymizer='GaussianBlur')
    out = stand_in['tmp_path'] / 'never.pth'
    assert train_inverter.main([config, '--face-dataset', stand_in['faces'], '--out', str(out), *FAST]) == 1
    assert 'the identity loss needs --embedder' in capsys.readouterr().err
    assert train_inverter.main([config, '--face-dataset', stand_in['faces'], '--embedder', 'discriminator',
                                '--out', str(out), *FAST]) == 1
    assert 'the detector has no co-trained face discriminator' in capsys.readouterr().err
    assert not out.exists()
