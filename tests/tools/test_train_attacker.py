"""tools/analysis/train_attacker.py: the adaptive attacker learns identities from raw faces, not from masked
ones, writes what the metric's checkpoint attacker loads, and is deterministic."""
import math
import os.path as osp

import pytest
import torch

from mmanon.datasets.toy_ava import generate_toy_ava, spec_from_preset
from mmanon.evaluation.attackers import build_attacker
from face_configs import write_face_config, write_stand_in_faces_config  # noqa: I100  (tests/tools is on sys.path)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SMOKE = osp.join(REPO, 'configs', 'detection', 'slowonly', 'slowonly_r18-smoke_1xb2-4x2x1-4i_ava-fixture-rgb.py')
import train_attacker  # noqa: E402  (tools/analysis is on sys.path, see conftest.py)

FAST = ['--num-workers', '0', '--device', 'cpu', '--epochs', '40', '--batch-size', '8', '--val-fraction', '0.5']


def fewest_correct_beyond_chance(num: int, chance: float, alpha: float = 1e-3) -> int:
    """The fewest correct answers out of ``num`` that random guessing, right with probability ``chance`` each
    time, reaches with probability at most ``alpha`` (the binomial tail)."""
    tail = 0.
    for correct in range(num, -1, -1):
        tail += math.comb(num, correct) * chance**correct * (1 - chance)**(num - correct)
        if tail > alpha:
            return correct + 1
    return 0


@pytest.fixture(scope='module')
def faces_data(tmp_path_factory):
    """The fixture preset with more train videos: its own 8 train faces of 3 identities would leave about four
    held-out faces, which random guessing gets all right 1% of the time; 8 videos of 3 keyframes give ~40."""
    out = tmp_path_factory.mktemp('attacker_data') / 'toy'
    generate_toy_ava(str(out), spec_from_preset('fixture', num_train_videos=8, keyframes_per_video=3))
    return out


def training_faces(config):
    return train_attacker.training_faces(train_attacker.parse_args([config, *FAST]), 'unused.pth')[0]


def run(tmp_path, config, *flags):
    out = tmp_path / 'attacker.pth'
    assert train_attacker.main([config, '--out', str(out), *FAST, *flags]) == 0
    return torch.load(out, map_location='cpu', weights_only=True)


def test_learns_identities_from_raw_faces(tmp_path, faces_data):
    saved = run(tmp_path, write_face_config(tmp_path / 'raw.py', faces_data))
    meta = saved['meta']
    assert meta['identities'] == [0, 1, 2, 3] and meta['chance'] == 0.25
    assert meta['anonymizer'] == 'IdentityAnonymizer' and meta['checkpoint'] is None
    num = meta['held_out_faces']
    assert num >= 15 and meta['train_faces'] >= num
    # Beyond what guessing reaches once in a thousand runs; and better than always naming one identity.
    correct = round(meta['held_out_accuracy'] * num)
    assert correct >= fewest_correct_beyond_chance(num, meta['chance'])
    assert meta['held_out_accuracy'] > meta['majority_rate']

    # What the metric's checkpoint attacker loads: the same head, embedding crops of the toy's 32x32 faces.
    assert saved['config']['num_classes'] == 4 and saved['config']['input_size'] == [32, 32]
    attacker = build_attacker(dict(type='checkpoint', checkpoint=str(tmp_path / 'attacker.pth')))
    assert attacker.name == 'attacker' and attacker.embed_dims == 64
    for name, value in attacker.head.state_dict().items():
        assert torch.equal(value, saved['state_dict'][name]), name
    crops = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    assert attacker.embed(crops).shape == (3, 64)
    # The training gallery: one template per class, in class order, each the normalised mean of its identity's
    # normalised embeddings of the training faces (both parts), as the metric's raw gallery builds them.
    assert meta['faces'] == 'anonymized' and saved['templates'].shape == (4, 64)
    assert attacker.train_gallery[0].tolist() == [0, 1, 2, 3] and attacker.classes.tolist() == [0, 1, 2, 3]
    faces = training_faces(write_face_config(tmp_path / 'raw.py', faces_data))
    embeddings = torch.nn.functional.normalize(torch.from_numpy(attacker.embed(faces.anonymized_crops)), dim=1)
    for identity in range(4):
        template = torch.nn.functional.normalize(embeddings[faces.identities == identity].mean(0), dim=0)
        torch.testing.assert_close(saved['templates'][identity], template, rtol=1e-4, atol=1e-5)


def test_stays_at_chance_on_solid_masked_faces(tmp_path, faces_data):
    config = write_face_config(tmp_path / 'mask.py', faces_data, 'SolidMask')
    meta = run(tmp_path, config)['meta']
    assert meta['anonymizer'] == 'SolidMask'
    # Every masked crop is the same black square, so the head can only name one identity for all of them; the
    # best it can do is the most frequent held-out identity.
    assert meta['held_out_accuracy'] <= meta['majority_rate'] + 1e-9
    assert meta['held_out_accuracy'] < fewest_correct_beyond_chance(meta['held_out_faces'], 0.25) / \
        meta['held_out_faces']
    # The same faces, raw: a recogniser of the people as they look, whatever the config's anonymizer.
    raw = run(tmp_path, config, '--faces', 'raw')['meta']
    assert raw['faces'] == 'raw' and raw['anonymizer'] == 'SolidMask'
    assert round(raw['held_out_accuracy'] * raw['held_out_faces']) >= fewest_correct_beyond_chance(
        raw['held_out_faces'], raw['chance'])


def test_same_seed_same_attacker(tmp_path, faces_data):
    config = write_face_config(tmp_path / 'raw.py', faces_data)
    first = run(tmp_path, config, '--epochs', '3', '--seed', '3')
    second = run(tmp_path, config, '--epochs', '3', '--seed', '3')
    other = run(tmp_path, config, '--epochs', '3', '--seed', '4')
    assert first['meta'] == second['meta']
    for name, value in first['state_dict'].items():
        assert torch.equal(value, second['state_dict'][name]), name
    assert any(not torch.equal(value, other['state_dict'][name]) for name, value in first['state_dict'].items())


@pytest.mark.parametrize('anonymizer', ['IdentityAnonymizer', 'SolidMask'])
def test_face_identity_dataset_source(tmp_path, anonymizer):
    faces = write_stand_in_faces_config(tmp_path / 'faces.py')
    # No CHECKPOINT: the handcrafted anonymizers have no weights; the detector's data never gets read.
    config = write_face_config(tmp_path / 'detector.py', anonymizer=anonymizer)
    meta = run(tmp_path, config, '--face-dataset', str(faces))['meta']
    assert meta['face_dataset'] == str(faces) and meta['identities'] == [0, 1, 2, 3]
    assert meta['train_faces'] + meta['held_out_faces'] == 40
    if anonymizer == 'IdentityAnonymizer':
        assert meta['held_out_accuracy'] == 1.0
    else:
        assert meta['held_out_accuracy'] <= meta['majority_rate'] + 1e-9


def test_clear_errors(tmp_path, capsys):
    # The smoke config's stock preprocessor cuts out no faces.
    assert train_attacker.main([SMOKE, '--out', str(tmp_path / 'a.pth')]) == 1
    assert 'slowonly_r18-smoke_1xb2-4x2x1-4i_ava-fixture-rgb.py' in capsys.readouterr().err
    # A learned anonymizer without the checkpoint that trained it.
    config = write_face_config(tmp_path / 'learned.py', anonymizer='ResNetAnonymizer', base_channels=4, num_blocks=1,
                               crop_size=(16, 16))
    assert train_attacker.main([config, '--out', str(tmp_path / 'a.pth')]) == 1
    assert 'learned weights' in capsys.readouterr().err
    assert not (tmp_path / 'a.pth').exists()
