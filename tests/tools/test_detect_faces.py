"""tools/data/detect_faces.py on a tiny generated AVA-style dataset, with a detector that finds white boxes."""
import os
import os.path as osp
import runpy

import cv2
import numpy as np
import pytest

from mmanon.datasets.face_annotations import load_face_file

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
tool = runpy.run_path(osp.join(REPO, 'tools', 'data', 'detect_faces.py'))
detect_faces = tool['detect_faces']
H, W = 100, 200
# (video_id, timestamp) -> pixel face boxes drawn in its keyframe
FACES = {
    ('vidA', 902): [(20, 10, 40, 30), (110, 12, 126, 30), (186, 50, 196, 60)],
    ('vidA', 903): [],
    ('vidB', 902): [(60, 20, 80, 44)],
}
# video_id,timestamp,x1,y1,x2,y2,action,entity_id; persons 0 and 1 of vidA overlap around x = 0.5-0.6.
ANNOTATIONS = """vidA,902,0.000,0.000,0.600,1.000,1,0
vidA,902,0.000,0.000,0.600,1.000,3,0
vidA,902,0.500,0.000,0.900,1.000,2,1
vidA,903,0.000,0.000,0.600,1.000,1,0
vidB,902,0.200,0.000,0.600,1.000,4,3
"""


class WhiteBoxDetector:
    """Finds the white rectangles of a frame; ``interrupt_at`` makes one call raise KeyboardInterrupt."""

    def __init__(self, interrupt_at=None):
        self.calls, self.interrupt_at = 0, interrupt_at

    def __call__(self, frame):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        count, _, stats, _ = cv2.connectedComponentsWithStats((frame.min(axis=2) > 200).astype(np.uint8))
        return np.array([[x, y, x + w, y + h, 1.0] for x, y, w, h, _ in stats[1:count]], np.float32).reshape(-1, 5)


def draw(boxes):
    frame = np.full((H, W, 3), 80, np.uint8)
    for x1, y1, x2, y2 in boxes:
        frame[y1:y2, x1:x2] = 255
    return frame


@pytest.fixture
def dataset(tmp_path):
    for (video_id, timestamp), boxes in FACES.items():
        folder = tmp_path / 'rawframes' / video_id
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f'img_{30 * (timestamp - 900) + 1:05d}.png'), draw(boxes))
    ann = tmp_path / 'ava_train_v2.1.csv'
    ann.write_text(ANNOTATIONS)
    return dict(ann_file=str(ann), frame_root=str(tmp_path / 'rawframes'), filename_tmpl='img_{:05d}.png')


def expected_rows(identities=False):
    entity = {('vidA', 902): [0, 1, -1], ('vidB', 902): [3]}
    identity = {('vidA', 0): 0, ('vidA', 1): 1, ('vidB', 3): 2}
    rows = []
    for key, boxes in sorted(FACES.items()):
        for (x1, y1, x2, y2), e in zip(boxes, entity.get(key, [])):
            i = identity[(key[0], e)] if identities and e >= 0 else -1
            rows.append(f'{key[0]},{key[1]},{x1 / W:.3f},{y1 / H:.3f},{x2 / W:.3f},{y2 / H:.3f},{i},{e}')
    return sorted(rows)


@pytest.mark.parametrize('identities', [False, True])
def test_faces_are_assigned_to_person_boxes(tmp_path, dataset, identities):
    out = str(tmp_path / 'faces.csv')
    summary = detect_faces(out_file=out, detector=WhiteBoxDetector(), identity_from_entity=identities,
                           progress=False, **dataset)
    assert summary == dict(keyframes=3, frames=3, resumed=0, faces=4, assigned=3)
    assert open(out).read().splitlines() == expected_rows(identities)
    assert load_face_file(out)[0].entity_id == 0
    assert not osp.exists(out + '.partial')


def test_resumes_after_an_interruption_without_duplicates(tmp_path, dataset):
    out = str(tmp_path / 'faces.csv')
    with pytest.raises(KeyboardInterrupt):
        detect_faces(out_file=out, detector=WhiteBoxDetector(interrupt_at=2), progress=False, **dataset)
    assert not osp.exists(out)
    with open(out + '.partial', 'a') as f:  # a line cut off by the interruption
        f.write('{"video_id": "vidA", "timest')
    detector = WhiteBoxDetector()
    summary = detect_faces(out_file=out, detector=detector, progress=False, **dataset)
    assert detector.calls == 2 and summary['resumed'] == 1
    assert open(out).read().splitlines() == expected_rows()
    assert sorted(os.listdir(tmp_path)) == ['ava_train_v2.1.csv', 'faces.csv', 'rawframes']


def test_missing_keyframe_names_the_file(tmp_path, dataset):
    os.remove(osp.join(dataset['frame_root'], 'vidB', 'img_00061.png'))
    with pytest.raises(FileNotFoundError, match='vidB/img_00061.png'):
        detect_faces(out_file=str(tmp_path / 'faces.csv'), detector=WhiteBoxDetector(), progress=False, **dataset)
    assert not osp.exists(tmp_path / 'faces.csv')


def test_keyframes_from_video_files(tmp_path):
    videos = tmp_path / 'videos'
    videos.mkdir()
    writer = cv2.VideoWriter(str(videos / 'vidV.avi'), cv2.VideoWriter_fourcc(*'MJPG'), 10, (W, H))
    for index in range(40):  # the face moves 4 pixels a frame, so the position tells the frame read
        writer.write(draw([(4 * index, 30, 4 * index + 24, 60)]))
    writer.release()
    ann = tmp_path / 'ann.csv'
    ann.write_text('vidV,901,0,0,1,1,1,7\nvidV,903,0,0,1,1,1,7\n')
    out = str(tmp_path / 'faces.csv')
    detect_faces(str(ann), out, WhiteBoxDetector(), video_root=str(videos), progress=False)
    records = load_face_file(out)
    assert [(r.timestamp, r.entity_id) for r in records] == [(901, 7), (903, 7)]
    for record, frame_index in zip(records, (10, 30)):
        np.testing.assert_allclose(record.bbox, (4 * frame_index / W, 0.3, (4 * frame_index + 24) / W, 0.6),
                                   atol=0.021)


def test_cli_builds_the_detector_and_reports(tmp_path, dataset, capsys):
    out = str(tmp_path / 'faces.csv')
    assert tool['main']([dataset['ann_file'], out, '--frame-root', dataset['frame_root'], '--filename-tmpl',
                         dataset['filename_tmpl']]) == 0
    assert '3 frames around 3 keyframes' in capsys.readouterr().out and osp.exists(out)
    assert tool['main']([dataset['ann_file'], out, '--frame-root', str(tmp_path / 'nope')]) == 1
    assert 'nope' in capsys.readouterr().err


class OtherDetector(WhiteBoxDetector):
    """Another detector: the same boxes, another name."""


@pytest.mark.parametrize('change, named', [
    (dict(detector=OtherDetector()), r"detector \('WhiteBoxDetector' there, 'OtherDetector' now\)"),
    (dict(fps=25), r'fps \(30 there, 25 now\)'),
    (dict(timestamp_start=901), r'timestamp_start \(900 there, 901 now\)'),
    (dict(detector_settings=dict(detector='haar', detector_options=dict(min_neighbors=3))),
     r"detector \('WhiteBoxDetector' there, 'haar' now\); detector_options \(None there, \{'min_neighbors': 3\} "
     r'now\)'),
])
def test_resume_with_other_settings_is_refused(tmp_path, dataset, change, named):
    out = str(tmp_path / 'faces.csv')
    with pytest.raises(KeyboardInterrupt):
        detect_faces(out_file=out, detector=WhiteBoxDetector(interrupt_at=2), progress=False, **dataset)
    partial = open(out + '.partial').read()
    kwargs = dict(dict(detector=WhiteBoxDetector(), progress=False, out_file=out, **dataset), **change)
    with pytest.raises(ValueError, match=r'faces.csv.partial was made with other settings: ' + named +
                       '. Rerun with its settings to resume it, or pass --restart'):
        detect_faces(**kwargs)
    assert open(out + '.partial').read() == partial and not osp.exists(out)
    if 'detector' in change:  # the fixture has frames at the default timing only
        detect_faces(**dict(kwargs, restart=True))
        assert not osp.exists(out + '.partial') and open(out).read().splitlines() == expected_rows()


def test_resume_checks_the_annotations_and_the_cli_detector(tmp_path, dataset, capsys):
    out = str(tmp_path / 'faces.csv')
    with pytest.raises(KeyboardInterrupt):
        detect_faces(out_file=out, detector=WhiteBoxDetector(interrupt_at=2), progress=False, **dataset)
    with open(dataset['ann_file'], 'a') as f:
        f.write('vidB,902,0.7,0.0,0.9,1.0,2,4\n')
    with pytest.raises(ValueError, match=r'was made with other settings: ann_file_sha256 \('):
        detect_faces(out_file=out, detector=WhiteBoxDetector(), progress=False, **dataset)
    # A partial file of an older version, without its settings, is not continued either.
    with open(out + '.partial', 'w') as f:
        f.write('{"video_id": "vidA", "timestamp": 902, "faces": []}\n')
    args = [dataset['ann_file'], out, '--frame-root', dataset['frame_root'], '--filename-tmpl',
            dataset['filename_tmpl'], '--detector', 'haar']
    assert tool['main'](args) == 1
    assert 'faces.csv.partial does not start with the settings it was made with' in capsys.readouterr().err
    # The command line records the detector by its name and options.
    assert tool['main'](args + ['--restart', '--detector-options', 'min_neighbors=3']) == 0
    capsys.readouterr()
    with open(out + '.partial', 'w') as f:
        f.write('{"settings": {"detector": "dlib"}}\n')
    assert tool['main'](args) == 1
    assert "detector ('dlib' there, 'haar' now)" in capsys.readouterr().err


# --- All frames: the per-frame rows that face tubes are built from ------------------------------------------


def moving_box(index):
    """The white box of frame ``index`` (1-based): it moves 3 pixels a frame, so each frame is told apart."""
    return (3 * index, 30, 3 * index + 16, 50)


@pytest.fixture
def moving(tmp_path):
    """One video of 56 frames at 10 fps (seconds 900.0 to 905.5), keyframes 902 and 904."""
    folder = tmp_path / 'rawframes' / 'vidM'
    folder.mkdir(parents=True)
    for index in range(1, 57):
        cv2.imwrite(str(folder / f'img_{index:05d}.png'), draw([moving_box(index)]))
    ann = tmp_path / 'ann.csv'
    ann.write_text('vidM,902,0.0,0.0,1.0,1.0,1,4\nvidM,904,0.0,0.0,1.0,1.0,1,4\n')
    return dict(ann_file=str(ann), frame_root=str(tmp_path / 'rawframes'), filename_tmpl='img_{:05d}.png', fps=10)


def test_all_frames_around_keyframes_get_rows_with_their_seconds(tmp_path, moving):
    out = str(tmp_path / 'faces.csv')
    detector = WhiteBoxDetector()
    summary = detect_faces(out_file=out, detector=detector, all_frames=True, window=1.5, progress=False, **moving)
    # Frames 6 to 36 around 902 (frame 21), 26 to 56 around 904 (frame 41): 51 frames, each searched once.
    assert summary == dict(keyframes=2, frames=51, resumed=0, faces=51, assigned=2) and detector.calls == 51
    records = load_face_file(out)
    # Only the annotated keyframes have integer timestamps (other whole seconds are written 901.0000) and
    # their faces go to their person boxes.
    assert [r.timestamp for r in records if r.is_keyframe] == [902, 904]
    assert all(r.entity_id == (4 if r.is_keyframe else -1) and r.identity == -1 for r in records)
    assert 'vidM,903.0000,' in open(out).read()
    for record in records:
        index = round((record.timestamp - 900) * 10) + 1
        np.testing.assert_allclose(record.bbox, np.array(moving_box(index)) / [W, H, W, H], atol=5e-4)
    assert [round((r.timestamp - 900) * 10) + 1 for r in records] == list(range(6, 57))


def test_all_frames_resume_after_an_interruption(tmp_path, moving):
    out = str(tmp_path / 'faces.csv')
    with pytest.raises(KeyboardInterrupt):
        detect_faces(out_file=out, detector=WhiteBoxDetector(interrupt_at=20), all_frames=True, progress=False,
                     **moving)
    detector = WhiteBoxDetector()
    summary = detect_faces(out_file=out, detector=detector, all_frames=True, progress=False, **moving)
    assert summary['resumed'] == 19 and detector.calls == 51 - 19
    again = str(tmp_path / 'again.csv')
    detect_faces(out_file=again, detector=WhiteBoxDetector(), all_frames=True, progress=False, **moving)
    assert open(out).read() == open(again).read()


def test_all_frames_of_video_files(tmp_path):
    videos = tmp_path / 'videos'
    videos.mkdir()
    writer = cv2.VideoWriter(str(videos / 'vidV.avi'), cv2.VideoWriter_fourcc(*'MJPG'), 10, (W, H))
    for index in range(40):
        writer.write(draw([moving_box(index + 1)]))
    writer.release()
    ann = tmp_path / 'ann.csv'
    ann.write_text('vidV,901,0,0,1,1,1,7\nvidV,903,0,0,1,1,1,7\n')
    out = str(tmp_path / 'faces.csv')
    summary = detect_faces(str(ann), out, WhiteBoxDetector(), video_root=str(videos), all_frames=True, window=0.5,
                           progress=False)
    assert summary['frames'] == 22
    records = load_face_file(out)
    # Video frame j (from 0) shows second 900 + j / 10; its white box is moving_box(j + 1).
    assert [round((r.timestamp - 900) * 10) for r in records] == list(range(5, 16)) + list(range(25, 36))
    for record in records:
        j = round((record.timestamp - 900) * 10)
        np.testing.assert_allclose(record.bbox, np.array(moving_box(j + 1)) / [W, H, W, H], atol=0.021)


def test_the_dataset_builds_face_tubes_from_all_frames(tmp_path, moving):
    from mmaction.registry import DATASETS
    from mmengine.registry import DefaultScope
    out = str(tmp_path / 'faces.csv')
    detect_faces(out_file=out, detector=WhiteBoxDetector(), all_frames=True, progress=False, **moving)
    pipeline = [dict(type='SampleAVAFrames', clip_len=8, frame_interval=3, test_mode=True),
                dict(type='RawFrameDecode'), dict(type='FormatShape', input_format='NCTHW', collapse=True),
                dict(type='PackActionInputs')]
    with DefaultScope.overwrite_default_scope('mmaction'):
        dataset = DATASETS.build(dict(type='mmanon.AVAFaceDataset', ann_file=moving['ann_file'], face_file=out,
                                      pipeline=pipeline, data_prefix=dict(img=moving['frame_root']), fps=10,
                                      filename_tmpl=moving['filename_tmpl'], num_classes=3, timestamp_end=905))
    for i in range(len(dataset)):
        packed = dataset[i]
        white = (packed['inputs'] > 200).all(dim=0)  # (T, H, W)
        (tube, ) = packed['data_samples'].face_tubes.bboxes.tolist()
        for t, (x1, y1, x2, y2) in enumerate(tube):
            rows, cols = np.nonzero(white[t].numpy())
            # The file's 3 decimals are a tenth of a pixel at this width.
            np.testing.assert_allclose((x1, y1, x2, y2), (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1),
                                       atol=0.11)
