"""tools/data/videos_to_ava.py and tools/analysis/tube_coverage.py on a generated video whose face (a white box)
crosses the frame, with scripted detectors."""
import os.path as osp
import runpy

import cv2
import numpy as np
import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
to_ava = runpy.run_path(osp.join(REPO, 'tools', 'data', 'videos_to_ava.py'))
coverage = runpy.run_path(osp.join(REPO, 'tools', 'analysis', 'tube_coverage.py'))
detect_faces = runpy.run_path(osp.join(REPO, 'tools', 'data', 'detect_faces.py'))['detect_faces']
H, W = 120, 240
NUM_FRAMES = 150  # 5 s at the layout's 30 frames a second


def face(index):
    """The face of frame ``index`` (1-based): it moves 1.2 pixels a frame; none between frames 85 and 95."""
    if 85 <= index <= 95:
        return None
    x = 10 + 1.2 * index
    return (int(x), 40, int(x) + 20, 64)


def white_boxes(frame):
    """The white rectangles of a BGR or RGB frame, (K, 5) boxes with score 1."""
    count, _, stats, _ = cv2.connectedComponentsWithStats((frame.min(axis=2) > 200).astype(np.uint8))
    return np.array([[x, y, x + w, y + h, 1.0] for x, y, w, h, _ in stats[1:count]], np.float32).reshape(-1, 5)


@pytest.fixture(scope='module')
def layout(tmp_path_factory):
    root = tmp_path_factory.mktemp('coverage')
    video = root / 'walk.avi'
    # Lossless frames: the white box is the face's exact box in every frame.
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'FFV1'), 30, (W, H))
    for index in range(1, NUM_FRAMES + 1):
        frame = np.full((H, W, 3), 90, np.uint8)
        if face(index) is not None:
            x1, y1, x2, y2 = face(index)
            frame[y1:y2, x1:x2] = 255
        writer.write(frame)
    writer.release()
    out_dir = root / 'ava'
    video_id, rows = to_ava['video_to_ava'](str(video), str(out_dir), white_boxes, window=1.1)
    ann_file = out_dir / 'ann.csv'
    ann_file.write_text(''.join(r + '\n' for r in rows))
    return dict(root=root, out_dir=out_dir, video_id=video_id, rows=rows, ann_file=str(ann_file),
                frame_root=str(out_dir / 'rawframes'))


def test_videos_become_the_ava_layout_with_persons_from_faces(layout):
    assert layout['video_id'] == 'walk'
    frames = sorted((layout['out_dir'] / 'rawframes' / 'walk').iterdir())
    assert len(frames) == NUM_FRAMES and frames[0].name == 'img_00001.jpg'
    # Keyframes need 33 frames on each side: seconds 902 (frame 61) and 903 (frame 91, without a face).
    rows = [r.split(',') for r in layout['rows']]
    assert [r[1] for r in rows] == ['902', '903']
    x1, y1, x2, y2 = face(61)
    np.testing.assert_allclose([float(v) for v in rows[0][2:6]],
                               to_ava['person_box'](np.array([x1 / W, y1 / H, x2 / W, y2 / H])), atol=2e-3)
    assert rows[0][6:] == ['1', '0'] and rows[1][2:] == ['0.000', '0.000', '1.000', '1.000', '1', '1']


def test_persons_are_linked_across_keyframes():
    boxes = [np.array([[0.1, 0.1, 0.2, 0.2], [0.7, 0.1, 0.8, 0.2]]), np.array([[0.75, 0.12, 0.85, 0.22]]),
             np.zeros((0, 4)), np.array([[0.2, 0.1, 0.3, 0.2]])]
    assert to_ava['link_persons'](boxes) == [[0, 1], [1], [], [2]]


def test_coverage_counts_faces_left_raw_before_and_after_tubes(layout, tmp_path):
    keyframes, all_frames = str(tmp_path / 'key.csv'), str(tmp_path / 'all.csv')
    args = dict(ann_file=layout['ann_file'], frame_root=layout['frame_root'], detector=white_boxes,
                progress=False)
    detect_faces(out_file=keyframes, **args)
    detect_faces(out_file=all_frames, all_frames=True, **args)
    seen = []

    def reference(key, rgb):
        seen.append(key)
        return white_boxes(rgb)[:, :4]

    rows = coverage['measure'](layout['ann_file'], layout['frame_root'], dict(keyframes=keyframes, all=all_frames),
                               reference, ['SlowOnly 4x16'])
    by_regions = {r['regions']: r for r in rows}
    assert list(by_regions) == ['keyframe regions', 'tubes: keyframes', 'tubes: all']
    # Two clips of 4 frames, 16 apart, around frames 62 and 92; the face is gone in frames 92 (a keyframe
    # clip without a face in the keyframe) but in the other seven.
    for row in rows:
        assert (row['clips'], row['sampled_frames'], row['face_frames']) == (2, 8, 7)
    assert set(seen) == {f'walk/{i}' for i in (30, 46, 62, 78, 60, 76, 92, 108)}
    # The face moves 19 pixels between sampled frames: the keyframe's 2x region misses it in all but its own
    # frame; a single keyframe face gives no motion to interpolate; every frame's face is a tube of its own.
    assert by_regions['keyframe regions']['raw_frames'] == 6
    assert by_regions['tubes: keyframes']['raw_frames'] == 6
    assert by_regions['tubes: all']['raw_frames'] == 0 and by_regions['tubes: all']['strict_raw_frames'] == 0
    assert by_regions['keyframe regions']['by_video'] == {'walk': [7, 6]}
    # Two evenly spaced frames of each clip: 30 and 62, 60 and 92.
    (row, ) = coverage['measure'](layout['ann_file'], layout['frame_root'], dict(all=all_frames), reference,
                                  ['SlowOnly 4x16'], max_frames=2)[1:]
    assert (row['sampled_frames'], row['face_frames'], row['raw_frames']) == (4, 3, 0)
    table = coverage['format_table'](rows)
    assert '| SlowOnly 4x16 | tubes: all | 2 | 8 | 7 | 0 | 0.0% | 0.0% |' in table
