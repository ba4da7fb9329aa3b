import math
import os
import os.path as osp
import shutil

import cv2
import numpy as np
import pytest
import torch
from mmaction.datasets.transforms import SampleAVAFrames
from mmaction.registry import DATASETS, MODELS
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from mmanon.datasets import AVAFaceDataset
from mmanon.datasets.face_annotations import FaceFileError
from mmanon.datasets.toy_ava import PRESETS, generate_toy_ava

CLIP = dict(clip_len=4, frame_interval=2)


def train_pipeline(flip_ratio=0.5, scale_range=(64, 80), crop=64):
    return [
        dict(type='SampleAVAFrames', **CLIP),
        dict(type='RawFrameDecode'),
        dict(type='RandomRescale', scale_range=scale_range),
        dict(type='RandomCrop', size=crop),
        dict(type='Flip', flip_ratio=flip_ratio),
        dict(type='FormatShape', input_format='NCTHW', collapse=True),
        dict(type='PackActionInputs'),
    ]


def val_pipeline(short_edge=64):
    return [
        dict(type='SampleAVAFrames', test_mode=True, **CLIP),
        dict(type='RawFrameDecode'),
        dict(type='Resize', scale=(-1, short_edge)),
        dict(type='FormatShape', input_format='NCTHW', collapse=True),
        dict(type='PackActionInputs'),
    ]


def build(**cfg):
    """Build through mmaction's registry in its scope, as a stock AVA config does."""
    with DefaultScope.overwrite_default_scope('mmaction'):
        return DATASETS.build(dict(type='mmanon.AVAFaceDataset', **cfg))


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    """The tiny generated AVA benchmark and the config of its train split."""
    out_dir = str(tmp_path_factory.mktemp('toy_ava'))
    paths = generate_toy_ava(out_dir, PRESETS['fixture'])
    cfg = dict(
        ann_file=paths['ann_file_train'],
        exclude_file=paths['exclude_file_train'],
        label_file=paths['label_file'],
        proposal_file=paths['proposal_file_train'],
        data_prefix=dict(img=paths['data_root']),
        num_classes=6,
        face_file=paths['face_file_train'],
        pipeline=train_pipeline())
    return dict(paths=paths, cfg=cfg)


def skip_warnings(messages):
    return [message for message in messages if message.startswith('skipped')]


def read_rows(path):
    with open(path) as f:
        return [line.rstrip('\n').split(',') for line in f if line.strip()]


# --- Geometry: the face boxes land on the pixels of the faces ---------------------------------------------

FRAME_H, FRAME_W = 100, 200
BACKGROUND, BODY = (128, 128, 128), (200, 60, 0)  # BGR, as written
# Per person: AVA box and face box in pixels of the frame, face colour (BGR), identity, entity id.
PERSONS = [((20, 10, 100, 95), (40, 15, 70, 40), (0, 0, 255), 7, 0),
           ((120, 20, 190, 95), (140, 25, 160, 45), (0, 255, 0), 3, 1)]


def _norm(box):
    return ','.join(f'{v / s:.3f}' for v, s in zip(box, (FRAME_W, FRAME_H) * 2))


@pytest.fixture(scope='module')
def marked(tmp_path_factory):
    """One video whose faces are solid colours (lossless PNG frames), with its AVA and face CSVs."""
    root = tmp_path_factory.mktemp('marked')
    frame = np.full((FRAME_H, FRAME_W, 3), BACKGROUND, np.uint8)
    for body, face, colour, _, _ in PERSONS:
        frame[body[1]:body[3], body[0]:body[2]] = BODY
        frame[face[1]:face[3], face[0]:face[2]] = colour
    os.makedirs(root / 'frames' / 'vid')
    for i in range(1, 21):
        cv2.imwrite(str(root / 'frames' / 'vid' / f'img_{i:05d}.png'), frame)
    (root / 'ann.csv').write_text(''.join(
        f'vid,902,{_norm(body)},{1 + i},{entity}\n' for i, (body, _, _, _, entity) in enumerate(PERSONS)))
    (root / 'faces.csv').write_text(''.join(
        f'vid,902,{_norm(face)},{identity},{entity}\n' for _, face, _, identity, entity in PERSONS))
    # fps=4 keeps the clip of second 902 within the 20 frames.
    return dict(ann_file=str(root / 'ann.csv'), face_file=str(root / 'faces.csv'), num_classes=3, fps=4,
                data_prefix=dict(img=str(root / 'frames')), filename_tmpl='img_{:05}.png')


def _pixels_inside(box, margin, height, width):
    """Index arrays (rows, cols) of the pixels lying entirely inside ``box`` shrunk by ``margin``."""
    x1, y1, x2, y2 = box
    cols = np.arange(max(math.ceil(x1 + margin), 0), min(math.floor(x2 - margin), width))
    rows = np.arange(max(math.ceil(y1 + margin), 0), min(math.floor(y2 - margin), height))
    return np.ix_(rows, cols)


def _ring(box, distance, height, width):
    """(rows, cols) of the pixels on the border of ``box`` grown by ``distance``, inside the image."""
    x1, y1, x2, y2 = box
    left, right = math.floor(x1 - distance), math.floor(x2 + distance)
    top, bottom = math.floor(y1 - distance), math.floor(y2 + distance)
    points = [(y, x) for x in range(left, right + 1) for y in (top, bottom)]
    points += [(y, x) for y in range(top, bottom + 1) for x in (left, right)]
    points = np.array([(y, x) for y, x in points if 0 <= y < height and 0 <= x < width]).reshape(-1, 2)
    return points[:, 0], points[:, 1]


def check_faces_on_marked_pixels(packed):
    """Assert that every face box covers its colour in every frame, and a ring just outside does not."""
    clip = packed['inputs'].numpy()  # (C, T, H, W), RGB
    sample = packed['data_samples']
    _, _, height, width = clip.shape
    faces = sample.gt_faces
    assert faces.bboxes.shape == (len(PERSONS), 4) and faces.bboxes.dtype == torch.float32
    assert faces.identities.tolist() == [identity for *_, identity, _ in PERSONS]
    checked = 0
    for box, (_, _, colour, _, _) in zip(faces.bboxes.tolist(), PERSONS):
        rgb = np.array(colour[::-1])[:, None, None]
        rows, cols = _pixels_inside(box, 2, height, width)
        inside = clip[:, :, rows, cols]
        if inside.size:
            assert np.abs(inside.astype(int) - rgb[:, :, None]).max() <= 30, f'face {box} misses its colour'
            checked += 1
        rows, cols = _ring(box, 3, height, width)
        ring = clip[:, :, rows, cols].astype(int)
        assert (np.abs(ring - rgb).max(axis=0) > 60).all(), f'the colour of face {box} leaks outside it'
    # Each face lies inside the person box of the same identity.
    persons = dict(zip(sample.gt_instances.identities.tolist(), sample.gt_instances.bboxes.tolist()))
    for box, identity in zip(faces.bboxes.tolist(), faces.identities.tolist()):
        person = persons[identity]
        assert person[0] - 1e-3 <= box[0] <= box[2] <= person[2] + 1e-3
        assert person[1] - 1e-3 <= box[1] <= box[3] <= person[3] + 1e-3
    return checked


@pytest.mark.parametrize('flip_ratio', [1, 0])
def test_faces_follow_rescale_crop_and_flip(marked, flip_ratio):
    dataset = build(pipeline=train_pipeline(flip_ratio, scale_range=(64, 128)), **marked)
    checked = 0
    for seed in range(8):
        np.random.seed(seed)
        packed = dataset[0]
        assert packed['inputs'].shape[-2:] == (64, 64)
        checked += check_faces_on_marked_pixels(packed)
    # The crops vary with the seed; most of them keep at least one face visible.
    assert checked >= 8


def test_faces_follow_resize(marked):
    dataset = build(pipeline=val_pipeline(short_edge=128), test_mode=True, **marked)
    packed = dataset[0]
    assert packed['inputs'].shape[-2:] == (128, 256)
    assert check_faces_on_marked_pixels(packed) == len(PERSONS)
    np.testing.assert_allclose(packed['data_samples'].gt_faces.bboxes[0].numpy(), [51.2, 19.2, 89.6, 51.2],
                               atol=1e-3)


def test_faces_cropped_away_keep_their_row(marked):
    # A crop of 64 from a 64 x 128 frame shows at most one of the two faces entirely.
    dataset = build(pipeline=train_pipeline(0, scale_range=(64, 65)), **marked)
    for seed in range(8):
        np.random.seed(seed)
        faces = dataset[0]['data_samples'].gt_faces
        assert len(faces) == len(PERSONS)
        assert ((faces.bboxes[:, 2:] >= faces.bboxes[:, :2]).all())
        assert ((faces.bboxes >= 0) & (faces.bboxes <= 63)).all()


def test_pipeline_whose_geometry_cannot_be_followed_raises(marked):
    pipeline = train_pipeline()
    with pytest.raises(ValueError, match='must end with PackActionInputs'):
        build(pipeline=pipeline[:-1], **marked)
    flip_first = pipeline[:2] + [pipeline[4], pipeline[2], pipeline[3]] + pipeline[5:]
    with pytest.raises(ValueError, match='put Flip after every crop'):
        build(pipeline=flip_first, **marked)
    lazy = pipeline[:3] + [dict(type='RandomCrop', size=64, lazy=True), dict(type='Fuse')] + pipeline[4:]
    with pytest.raises(ValueError, match='is lazy'):
        build(pipeline=lazy, **marked)

    def rogue_resize(results):
        results['img_shape'] = (32, 32)
        return results

    dataset = build(pipeline=pipeline[:3] + [rogue_resize] + pipeline[3:], **marked)
    with pytest.raises(RuntimeError, match='changed the recorded frame geometry'):
        dataset[0]


# --- Identities ---------------------------------------------------------------------------------------------


def test_entity_identities_are_unique_across_videos_and_stable(toy):
    cfg = dict(toy['cfg'], face_file=None)
    first, second = build(**cfg), build(**cfg)
    rows = read_rows(cfg['ann_file'])
    persons = sorted({(r[0], int(r[7])) for r in rows})
    assert len({v for v, _ in persons}) > 1
    for i in range(len(first)):
        sample = first[i]['data_samples']
        assert 'gt_faces' not in sample
        identities = sample.gt_instances.identities
        assert identities.dtype == torch.long and len(identities) == len(sample.gt_instances.bboxes)
        info = first.get_data_info(i)
        expected = [persons.index((info['video_id'], int(e))) for e in info['entity_ids']]
        assert identities.tolist() == expected
        assert second[i]['data_samples'].gt_instances.identities.tolist() == expected
    # With a face file, the 'entity' source still numbers the AVA persons.
    with_faces = build(**dict(toy['cfg'], identity_source='entity'))
    assert with_faces[0]['data_samples'].gt_instances.identities.tolist() == \
        first[0]['data_samples'].gt_instances.identities.tolist()


def test_identities_from_face_file(toy):
    dataset = build(**toy['cfg'])
    links = {(r[0], int(r[7])): int(r[6]) for r in read_rows(toy['cfg']['face_file'])}
    faces_by_key = {}
    for r in read_rows(toy['cfg']['face_file']):
        faces_by_key.setdefault(f'{r[0]},{int(r[1]):04d}', []).append(int(r[6]))
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        sample = dataset[i]['data_samples']
        assert sample.gt_instances.identities.tolist() == [links[(info['video_id'], int(e))]
                                                           for e in info['entity_ids']]
        assert sample.gt_faces.identities.tolist() == faces_by_key[info['img_key']]


def test_unlinked_and_conflicting_identities(toy, tmp_path, logged_warnings):
    rows = read_rows(toy['cfg']['face_file'])
    # toytrain0000's entity 0 has no face link at all; entity 1 is linked with an unknown identity only.
    kept = [r for r in rows if not (r[0] == 'toytrain0000' and r[7] == '0')]
    kept = [r[:6] + ['-1', r[7]] if r[0] == 'toytrain0000' else r for r in kept]
    face_file = tmp_path / 'faces.csv'
    face_file.write_text(''.join(','.join(r) + '\n' for r in kept))
    dataset = build(**dict(toy['cfg'], face_file=str(face_file)))
    keys = [dataset.get_data_info(i)['img_key'] for i in range(len(dataset))]
    sample = dataset[keys.index('toytrain0000,0902')]['data_samples']
    assert sample.gt_instances.identities.tolist() == [-1, -1]
    assert sample.gt_faces.identities.tolist() == [-1]

    # The same person with two identities in one video.
    conflicting = [r[:6] + ['3'] + r[7:] if (r[0], r[1], r[7]) == ('toytrain0001', '903', '0') and r[6] != '3'
                   else r for r in rows]
    face_file.write_text(''.join(','.join(r) + '\n' for r in conflicting))
    with pytest.raises(ValueError, match=r'faces.csv: the face at toytrain0001,0903 gives entity_id 0'):
        build(**dict(toy['cfg'], face_file=str(face_file)))
    dataset = build(**dict(toy['cfg'], face_file=str(face_file), on_bad_data='skip'))
    skipped = skip_warnings(logged_warnings)
    assert len(skipped) == 1 and skipped[0].startswith('skipped 1 persons of'), skipped
    sample = dataset[[dataset.get_data_info(i)['img_key'] for i in range(len(dataset))].index(
        'toytrain0001,0902')]['data_samples']
    assert sample.gt_instances.identities.tolist()[0] == -1


def test_identity_source_is_validated(toy):
    with pytest.raises(ValueError, match="identity_source='face_file' needs a face_file"):
        AVAFaceDataset(**dict(toy['cfg'], face_file=None, identity_source='face_file'))
    with pytest.raises(ValueError, match='on_bad_data'):
        AVAFaceDataset(**dict(toy['cfg'], on_bad_data='ignore'))


def test_keyframe_without_faces_gets_empty_faces(toy, tmp_path):
    face_file = tmp_path / 'faces.csv'
    face_file.write_text(''.join(','.join(r) + '\n' for r in read_rows(toy['cfg']['face_file'])
                                 if r[0] != 'toytrain0001'))
    dataset = build(**dict(toy['cfg'], face_file=str(face_file)))
    keys = [dataset.get_data_info(i)['img_key'] for i in range(len(dataset))]
    faces = dataset[keys.index('toytrain0001,0902')]['data_samples'].gt_faces
    assert faces.bboxes.shape == (0, 4) and faces.identities.shape == (0, )
    assert faces.bboxes.dtype == torch.float32 and faces.identities.dtype == torch.long


# --- Bad input ----------------------------------------------------------------------------------------------


def _append(path, line):
    with open(path, 'a') as f:
        f.write(line + '\n')


def _with_bad_ava_row(line):

    def mutate(cfg, tmp_path):
        ann_file = str(tmp_path / 'ann.csv')
        shutil.copy(cfg['ann_file'], ann_file)
        _append(ann_file, line)
        cfg['ann_file'] = ann_file
        return r'ann.csv, row 9: '

    return mutate


def _with_bad_face_row(line):

    def mutate(cfg, tmp_path):
        face_file = str(tmp_path / 'faces.csv')
        shutil.copy(cfg['face_file'], face_file)
        _append(face_file, line)
        cfg['face_file'] = face_file
        return r'faces.csv, row 9: '

    return mutate


def _copy_frames(cfg, tmp_path):
    frames = str(tmp_path / 'frames')
    shutil.copytree(cfg['data_prefix']['img'], frames)
    cfg['data_prefix'] = dict(img=frames)
    return frames


def _without_frame_folder(cfg, tmp_path):
    shutil.rmtree(osp.join(_copy_frames(cfg, tmp_path), 'toytrain0001'))
    return r'sample toytrain0001,0902: the frame folder .*toytrain0001 does not exist'


def _without_keyframe(cfg, tmp_path):
    frames = _copy_frames(cfg, tmp_path)
    # The centre frame that mmaction's sampler reads for toytrain0000 at second 903.
    sampler = SampleAVAFrames(test_mode=True, **CLIP)
    info = build(**dict(cfg, check_frames=False)).get_data_info(1)
    assert info['img_key'] == 'toytrain0000,0903'
    centre = sampler(info)['frame_inds'][CLIP['clip_len'] // 2]
    os.remove(osp.join(frames, 'toytrain0000', f'img_{centre:05d}.jpg'))
    # A frame no sample reads is not missed.
    os.remove(osp.join(frames, 'toytrain0000', 'img_00001.jpg'))
    return rf'sample toytrain0000,0903: the frame .*img_{centre:05d}.jpg is missing'


BAD_INPUTS = {
    'ava row with 5 columns': (_with_bad_ava_row('toytrain0000,904,0.1,0.1,0.5'), 'expected 8 columns',
                               ValueError, 'bad rows of', 0),
    'ava row with a non-numeric box': (_with_bad_ava_row('toytrain0000,904,0.1,abc,0.5,0.9,1,0'),
                                       "y1 must be a number, got 'abc'", ValueError, 'bad rows of', 0),
    'ava row with a box outside [0, 1]': (_with_bad_ava_row('toytrain0000,904,0.1,0.1,1.5,0.9,1,0'),
                                          r'x2 must be a normalised coordinate in \[0, 1\], got 1.5', ValueError,
                                          'bad rows of', 0),
    'ava row with x1 >= x2': (_with_bad_ava_row('toytrain0000,904,0.5,0.1,0.5,0.9,1,0'),
                              'the box must have x1 < x2',
                              ValueError, 'bad rows of', 0),
    'ava row with a decimal timestamp': (_with_bad_ava_row('toytrain0000,904.5,0.1,0.1,0.5,0.9,1,0'),
                                         r"timestamp must be an integer \(AVA annotates whole seconds\), got "
                                         r"'904.5'", ValueError, 'bad rows of', 0),
    'ava row with an unknown action': (_with_bad_ava_row('toytrain0000,904,0.1,0.1,0.5,0.9,9,0'),
                                       r'action_id must be in \[1, 5\]', ValueError, 'bad rows of', 0),
    'face row with 4 columns': (_with_bad_face_row('toytrain0000,902,0.1,0.1'), 'expected 7 or 8 columns',
                                FaceFileError, 'bad rows of', 0),
    'face row of an unknown video': (_with_bad_face_row('nosuchvideo,902,0.1,0.1,0.2,0.2,1,0'),
                                     "video_id 'nosuchvideo' is not in the dataset", FaceFileError,
                                     'bad rows of', 0),
    'missing frame folder': (_without_frame_folder, '', FileNotFoundError, 'samples with missing frames', 2),
    'missing frame': (_without_keyframe, '', FileNotFoundError, 'samples with missing frames', 1),
}


@pytest.mark.parametrize('name', list(BAD_INPUTS))
def test_bad_input_raises_or_is_skipped(toy, tmp_path, logged_warnings, name):
    mutate, reason, error, warning, lost = BAD_INPUTS[name]
    baseline = len(build(**toy['cfg']))
    cfg = dict(toy['cfg'])
    where = mutate(cfg, tmp_path)
    with pytest.raises(error, match=where + reason):
        build(**cfg)
    dataset = build(**dict(cfg, on_bad_data='skip'))
    assert len(dataset) == baseline - lost
    skipped = skip_warnings(logged_warnings)
    assert len(skipped) == 1 and skipped[0].startswith(f'skipped {max(lost, 1)} {warning}'), skipped
    assert 'gt_faces' in dataset[len(dataset) - 1]['data_samples']


# --- Configs, collation and the stock detector ---------------------------------------------------------------


def test_builds_from_config_and_collates(toy):
    paths = toy['paths']
    dataloader_cfg = dict(
        batch_size=2,
        num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=False),
        collate_fn=dict(type='pseudo_collate'),
        dataset=dict(
            type='mmanon.AVAFaceDataset',
            ann_file=paths['ann_file_val'],
            exclude_file=paths['exclude_file_val'],
            label_file=paths['label_file'],
            proposal_file=paths['proposal_file_val'],
            data_prefix=dict(img=paths['data_root']),
            num_classes=6,
            face_file=paths['face_file_val'],
            pipeline=val_pipeline(),
            test_mode=True))
    with DefaultScope.overwrite_default_scope('mmaction'):
        dataloader = Runner.build_dataloader(dataloader_cfg, seed=0)
    assert isinstance(dataloader.dataset, AVAFaceDataset)
    batch = next(iter(dataloader))
    assert len(batch['inputs']) == len(batch['data_samples']) == 2
    for inputs, sample in zip(batch['inputs'], batch['data_samples']):
        assert inputs.shape == (3, CLIP['clip_len'], 64, 80)
        assert len(sample.gt_instances.identities) == len(sample.gt_instances.bboxes)
        assert len(sample.gt_faces.identities) == len(sample.gt_faces.bboxes) > 0
    again = pseudo_collate([dataloader.dataset[0], dataloader.dataset[1]])
    assert torch.equal(again['data_samples'][1].gt_faces.bboxes, batch['data_samples'][1].gt_faces.bboxes)


def test_stock_detector_trains_on_the_samples(toy, tmp_path):
    # The extra fields of the data samples must not disturb mmaction's AVA detector (a shrunk SlowOnly).
    config = tmp_path / 'config.py'
    config.write_text("_base_ = 'mmaction::detection/slowonly/"
                      "slowonly_kinetics400-pretrained-r50_8xb16-4x16x1-20e_ava21-rgb.py'\n")
    model_cfg = Config.fromfile(str(config)).model
    model_cfg.init_cfg = None
    model_cfg.backbone.depth = 18
    model_cfg.roi_head.bbox_head.update(in_channels=512, num_classes=6, topk=(1, 3))
    dataset = build(**toy['cfg'])
    with DefaultScope.overwrite_default_scope('mmaction'):
        model = MODELS.build(model_cfg)
    data = model.data_preprocessor(pseudo_collate([dataset[0], dataset[1]]), True)
    losses = model(**data, mode='loss')
    assert torch.isfinite(losses['loss_action_cls'])
