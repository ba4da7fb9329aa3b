"""tools/analysis/eval_face_verification.py on generated faces: a trained attacker verifies raw pairs
perfectly, the identity anonymizer changes nothing, a solid mask leaves chance; the protocol's arithmetic;
bad pairs files; --help."""
import csv
import importlib.util
import os.path as osp
import runpy

import numpy as np
import pytest
import torch

from mmanon.datasets.toy_faces import ToyFacesSpec, generate_toy_faces
from mmanon.registry import DATASETS, MODELS, build_in_scope

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
tool = runpy.run_path(osp.join(REPO, 'tools', 'analysis', 'eval_face_verification.py'))
ANONYMIZERS = osp.join(REPO, 'configs', '_base_', 'anonymizers')
CROP = ['--crop-size', '32', '32']


@pytest.fixture(scope='module')
def faces(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp('faces'))
    return generate_toy_faces(out_dir, ToyFacesSpec(num_identities=6, images_per_identity=4, image_size=(64, 64),
                                                    num_folds=10, pairs_per_fold=3))


@pytest.fixture(scope='module')
def attacker(faces, tmp_path_factory):
    """An attacker checkpoint: a tiny ArcFace head trained on the generated identities (ArcFace makes the
    embeddings of one identity point one way, which verification by cosine similarity needs)."""
    torch.manual_seed(0)
    dataset = build_in_scope(DATASETS, dict(
        type='FaceIdentityDataset', data_prefix=dict(img_path=faces['images']), landmark_file=faces['landmarks'],
        pipeline=[dict(type='LoadFaceImage'), dict(type='FaceAlign', crop_size=(32, 32)),
                  dict(type='PackFaceInputs')]))
    crops = torch.stack([dataset[i]['inputs'] for i in range(len(dataset))]).float()
    labels = torch.tensor([dataset.get_data_info(i)['gt_label'] for i in range(len(dataset))])
    config = dict(num_classes=6, input_size=(32, 32), base_channels=8, num_stages=2, embed_dims=16,
                  classifier='arcface')
    head = build_in_scope(MODELS, dict(type='FaceDiscriminatorHead', **config))
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a net this small only loses time to thread synchronisation on a busy machine
    try:
        for _ in range(60):
            loss = head.loss(crops, labels)['loss_identity']
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    path = str(tmp_path_factory.mktemp('attacker') / 'arcface.pth')
    torch.save(dict(config=config, state_dict=head.state_dict()), path)
    return path


def run(faces, attacker, out_dir, *extra):
    return tool['main']([faces['pairs'], faces['images'], '--landmarks', faces['landmarks'], '--attackers', attacker,
                         '--out-dir', str(out_dir), *CROP, *extra])


def test_raw_pairs_are_verified_and_a_solid_mask_leaves_chance(faces, attacker, learned_checkpoint, tmp_path,
                                                               capsys):
    anonymizers = [osp.join(ANONYMIZERS, name) for name in ('identity.py', 'solid_mask.py')]
    assert run(faces, attacker, tmp_path, '--anonymizers', *anonymizers, learned_checkpoint) == 0
    printed = capsys.readouterr().out
    with open(tmp_path / 'face_verification.csv') as f:
        rows = {row['anonymizer']: row for row in csv.DictReader(f)}
    assert list(rows) == ['raw', 'identity', 'solid_mask', 'learned']
    raw, identity, mask = rows['raw'], rows['identity'], rows['solid_mask']
    assert raw['pairs'] == 'raw/raw' and mask['pairs'] == 'raw/anonymized'
    assert raw['attacker'] == 'arcface' and raw['num_pairs'] == '60' and raw['num_folds'] == '10'
    assert float(raw['accuracy']) == 1.0 and float(raw['accuracy_std']) == 0.0 and float(raw['roc_auc']) == 1.0
    assert {k: v for k, v in identity.items() if k not in ('anonymizer', 'pairs')} == {
        k: v for k, v in raw.items() if k not in ('anonymizer', 'pairs')}
    # Every masked second face is the same black crop, so a score depends on the raw first face alone; the
    # generated folds start their different-identity pairs from their same-identity pairs' first faces.
    assert float(mask['accuracy']) == pytest.approx(0.5, abs=0.05)
    assert float(mask['roc_auc']) == pytest.approx(0.5, abs=0.05)
    assert 0 <= float(rows['learned']['accuracy']) <= 1
    markdown = (tmp_path / 'face_verification.md').read_text()
    assert markdown in printed and '| arcface | solid_mask | raw/anonymized | 0.5' in markdown


def test_identical_raw_pairs_without_landmarks(faces, attacker, tmp_path):
    # Same-identity pairs of an image with itself score 1 with any attacker.
    lines = ['2\t2'] + [f'face_0{i}\t1\t1' if k < 2 else f'face_0{i}\t1\tface_0{(i + 1) % 6}\t2'
                        for fold in range(2) for k, i in enumerate((fold, fold + 2, fold, fold + 2))]
    (tmp_path / 'pairs.txt').write_text('\n'.join(lines) + '\n')
    assert tool['main']([str(tmp_path / 'pairs.txt'), faces['images'], '--attackers', attacker, '--out-dir',
                         str(tmp_path), '--center-crop-ratio', '0.8', *CROP]) == 0
    with open(tmp_path / 'face_verification.csv') as f:
        (row, ) = csv.DictReader(f)
    assert float(row['accuracy']) == 1.0 and float(row['roc_auc']) == 1.0


def test_cross_validated_accuracy():
    scores = np.array([0.6, 0.35, 0.4, 0.1, 0.9, 0.8, 0.2, 0.0, 0.7, 0.85, 0.3, 0.25])
    same = np.array([True, True, False, False] * 3)
    folds = np.repeat([0, 1, 2], 4)
    accuracies, thresholds = tool['cross_validated_accuracy'](scores, same, folds)
    # Folds 1 and 2 separate perfectly between 0.3 and 0.7, so fold 0 is judged at 0.5 and its 0.35 is missed;
    # for the other two, 0.275 (or 0.325) and 0.5 are equally good on the rest, and the middle one, 0.5, is taken.
    np.testing.assert_allclose(thresholds, [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(accuracies, [0.75, 1.0, 1.0])
    # Constant scores: every threshold is equally good.
    assert tool['best_threshold'](np.full(4, 0.5), same[:4]) in (-0.5, 1.5)


@pytest.mark.parametrize('text, message', [
    ('10 300\n', r'announces 10 folds of 300 same-identity and 300 different-identity pairs, 6000 lines, but 0'),
    ('2 1\nA 1 2\nB 1 C 2\nA 1 2\nB 1 C\n', r'pairs.txt, row 5: fold 2 expects a different-identity pair here'),
    ('2 1\nA 1 2\nB 1 C 2\nA 1 x\nB 1 C 1\n', r"row 4: fold 2 expects a same-identity pair here, 'name n1 n2'"),
    ('1100\n', r"row 1: the header must be '<folds> <pairs per fold and kind>'"),
    ('1 1\nA 1 2\nB 1 C 2\n', r'has a single fold'),
])
def test_bad_pairs_files(tmp_path, text, message):
    path = tmp_path / 'pairs.txt'
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        tool['load_pairs'](str(path))


def test_errors_name_the_missing_file(faces, attacker, tmp_path, capsys):
    pairs = tmp_path / 'pairs.txt'
    pairs.write_text('2 1\nface_00 1 2\nface_00 1 face_01 1\nface_00 1 9\nface_00 1 face_01 1\n')
    assert run(dict(faces, pairs=str(pairs)), attacker, tmp_path) == 1
    err = capsys.readouterr().err
    assert '1 images of' in err and osp.join('face_00', 'face_00_0009.jpg') in err

    pairs.write_text('2 1\nface_00 1 2\nface_00 1 face_01 1\nface_00 1 2\nface_00 1 face_01 1\n')
    landmarks = tmp_path / 'landmarks.txt'
    with open(faces['landmarks']) as f:
        landmarks.write_text(''.join(line for line in f if not line.startswith('face_01/face_01_0001.jpg')))
    assert run(dict(faces, pairs=str(pairs), landmarks=str(landmarks)), attacker, tmp_path) == 1
    assert f'{landmarks} has no landmarks for face_01/face_01_0001.jpg' in capsys.readouterr().err

    (tmp_path / 'nothing.py').write_text('x = 1\n')
    assert run(dict(faces, pairs=str(pairs)), attacker, tmp_path, '--anonymizers', str(tmp_path / 'nothing.py')) == 1
    assert 'nothing.py defines no `anonymizer = dict(...)`' in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec('dlib') is not None, reason='dlib is installed')
def test_dlib_attacker_without_dlib_says_how_to_install_it(faces, tmp_path, capsys):
    assert run(faces, 'dlib', tmp_path) == 1
    assert 'pip install -e .[attack]' in capsys.readouterr().err


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        tool['parse_args'](['--help'])
    text = capsys.readouterr().out
    for flag in ('--attackers', '--anonymizers', '--landmarks', '--crop-size', '--center-crop-ratio', '--batch-size',
                 '--device', '--out-dir', '--trust-checkpoint'):
        assert flag in text
