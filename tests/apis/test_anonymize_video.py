"""anonymize_video on generated clips of moving synthetic faces, with a scripted detector that misses some."""
import os
import os.path as osp
import runpy

import cv2
import numpy as np
import pytest

from mmanon.apis import anonymize_video

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
synthetic_frames = runpy.run_path(osp.join(REPO, 'benchmarks', 'anonymize_video.py'))['synthetic_frames']
NUM_FRAMES, WIDTH, HEIGHT = 24, 160, 120
MISSED = set(range(6, 11))  # frames in which the detector is made to miss every face


class ScriptedDetector:
    """Returns the true face boxes of each frame in turn, except in the ``missed`` frames."""

    def __init__(self, boxes, missed=(), interrupt_at=None):
        self.boxes, self.missed, self.interrupt_at = boxes, set(missed), interrupt_at
        self.calls = 0

    def __call__(self, frame):
        index = self.calls
        self.calls += 1
        if index == self.interrupt_at:
            raise KeyboardInterrupt
        if index in self.missed:
            return np.zeros((0, 5), np.float32)
        boxes = self.boxes[index]
        return np.concatenate([boxes, np.ones((len(boxes), 1))], axis=1).astype(np.float32)


@pytest.fixture
def clip():
    frames, boxes = zip(*synthetic_frames(NUM_FRAMES, WIDTH, HEIGHT, num_faces=2))
    return list(frames), [b.astype(int) for b in boxes]


@pytest.fixture
def frame_folder(tmp_path, clip):
    folder = tmp_path / 'frames'
    folder.mkdir()
    for i, frame in enumerate(clip[0]):
        cv2.imwrite(str(folder / f'img_{i + 1:05d}.png'), frame)
    return str(folder)


@pytest.fixture
def video(tmp_path, clip):
    path = str(tmp_path / 'in.avi')
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'MJPG'), 25, (WIDTH, HEIGHT))
    for frame in clip[0]:
        writer.write(frame)
    writer.release()
    return path


def read_video(path):
    capture = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps


def face_pixels(frame, box):
    x1, y1, x2, y2 = box
    return frame[y1:y2, x1:x2].astype(int)


def run(input_path, output_path, boxes, **kwargs):
    kwargs.setdefault('detector', ScriptedDetector(boxes, MISSED))
    return anonymize_video(input_path, output_path, progress=False, **kwargs)


def test_every_face_is_anonymized_in_every_frame_even_where_the_detector_missed(tmp_path, clip, frame_folder):
    frames, boxes = clip
    out = str(tmp_path / 'out')
    summary = run(frame_folder, out, boxes, method='blur')
    assert sorted(os.listdir(out)) == sorted(os.listdir(frame_folder))
    assert summary['frames'] == NUM_FRAMES and summary['tracks'] == 2
    assert summary['faces_detected'] == 2 * (NUM_FRAMES - len(MISSED))
    assert summary['anonymized_frames'] == NUM_FRAMES
    for i, (frame, frame_boxes) in enumerate(zip(frames, boxes)):
        result = cv2.imread(osp.join(out, f'img_{i + 1:05d}.png'))
        assert result.shape == frame.shape
        for box in frame_boxes:
            changed = np.abs(face_pixels(result, box) - face_pixels(frame, box)).max(axis=2) > 0
            assert changed.mean() > 0.9, f'face {box} of frame {i} (missed: {i in MISSED}) is not anonymized'
        # Far from every face (beyond the doubled region) the frame is bit-identical.
        far = np.ones(frame.shape[:2], bool)
        for x1, y1, x2, y2 in frame_boxes:
            w, h = x2 - x1, y2 - y1
            far[max(y1 - h, 0):y2 + h, max(x1 - w, 0):x2 + w] = False
        assert (result[far] == frame[far]).all()


# FFmpeg reports MPEG-4 part 2 (written as mp4v) as FMP4.
@pytest.mark.parametrize('suffix,fourccs', [('.mp4', ('mp4v', 'fmp4')), ('.avi', ('mjpg', ))])
def test_video_keeps_frame_count_fps_and_resolution(tmp_path, clip, video, suffix, fourccs):
    frames, boxes = clip
    out = str(tmp_path / f'out{suffix}')
    summary = run(video, out, boxes, method='mask')
    written, fps = read_video(out)
    assert len(written) == summary['frames'] == NUM_FRAMES
    assert fps == pytest.approx(25) and summary['fps'] == pytest.approx(25)
    assert written[0].shape == (HEIGHT, WIDTH, 3)
    capture = cv2.VideoCapture(out)
    codec = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, 'little').decode()
    capture.release()
    assert codec.lower() in fourccs
    for i, (result, frame_boxes) in enumerate(zip(written, boxes)):
        for box in frame_boxes:  # painted black (up to compression), skin is ~180
            assert face_pixels(result, box).mean() < 40, f'face {box} of frame {i} is visible'


def test_frame_folder_to_video_takes_fps(tmp_path, clip, frame_folder):
    out = str(tmp_path / 'out.avi')
    summary = run(frame_folder, out, clip[1], method='pixelate', fps=12.5)
    written, fps = read_video(out)
    assert len(written) == NUM_FRAMES and fps == pytest.approx(12.5) and summary['fps'] == 12.5


def lost_faces_visible(tmp_path, clip, frame_folder, **kwargs):
    """Run with tracks expiring during the miss (max_age 1) and return, per missed frame, whether a face
    kept its original pixels."""
    frames, boxes = clip
    out = str(tmp_path / 'out')
    summary = run(frame_folder, out, boxes, method='mask', max_age=1, **kwargs)
    visible = []
    for i in sorted(MISSED):
        result = cv2.imread(osp.join(out, f'img_{i + 1:05d}.png'))
        visible.append(any((face_pixels(result, b) == face_pixels(frames[i], b)).all(axis=2).mean() > 0.5
                           for b in boxes[i]))
    return visible, summary, out


def test_without_fallback_faces_show_once_tracks_expire(tmp_path, clip, frame_folder):
    visible, summary, _ = lost_faces_visible(tmp_path, clip, frame_folder)
    assert visible == [False, True, True, True, True] and summary['fallback_frames'] == 0


def test_head_fallback_covers_expired_tracks(tmp_path, clip, frame_folder):
    visible, summary, _ = lost_faces_visible(tmp_path, clip, frame_folder, fallback='head', fallback_frames=10)
    assert not any(visible)
    assert summary['fallback_frames'] == len(MISSED) - 1


def test_frame_fallback_blurs_the_whole_frame(tmp_path, clip, frame_folder):
    visible, summary, out = lost_faces_visible(tmp_path, clip, frame_folder, fallback='frame', fallback_frames=3)
    assert visible == [False, False, False, False, True]
    assert summary['fallback_frames'] == 3
    (tmp_path / 'plain').mkdir()
    _, _, plain = lost_faces_visible(tmp_path / 'plain', clip, frame_folder)
    for i in range(NUM_FRAMES):
        name = f'img_{i + 1:05d}.png'
        changed = (cv2.imread(osp.join(out, name)) != cv2.imread(osp.join(plain, name))).any(axis=2).mean()
        # The blur leaves the linear background gradient nearly as it was, so not every pixel changes.
        assert changed > 0.2 if i in (7, 8, 9) else changed == 0, f'frame {i}: {changed:.0%} of the pixels blurred'


def test_detect_every_runs_the_detector_on_every_nth_frame(tmp_path, clip, frame_folder):
    frames, boxes = clip
    detector = ScriptedDetector(boxes[::3])
    summary = run(frame_folder, str(tmp_path / 'out'), boxes, method='blur', detector=detector, detect_every=3)
    assert detector.calls == NUM_FRAMES // 3 and summary['anonymized_frames'] == NUM_FRAMES


def no_partial_files(folder):
    return [n for n in os.listdir(folder) if '.partial' in n] == []


def test_interruption_leaves_no_output(tmp_path, clip, video):
    out = str(tmp_path / 'out.mp4')
    with pytest.raises(KeyboardInterrupt):
        run(video, out, clip[1], detector=ScriptedDetector(clip[1], interrupt_at=5))
    assert not osp.exists(out) and no_partial_files(tmp_path)


def test_missing_input(tmp_path, clip):
    with pytest.raises(FileNotFoundError, match='nope.mp4'):
        run(str(tmp_path / 'nope.mp4'), str(tmp_path / 'out.mp4'), clip[1])
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('content', [b'', b'\x00garbage' * 100])
def test_empty_or_corrupt_video(tmp_path, clip, content):
    bad = tmp_path / 'bad.mp4'
    bad.write_bytes(content)
    with pytest.raises(ValueError, match='bad.mp4'):
        run(str(bad), str(tmp_path / 'out.mp4'), clip[1])
    assert os.listdir(tmp_path) == ['bad.mp4']


def test_video_without_frames(tmp_path, clip):
    empty = str(tmp_path / 'empty.avi')
    cv2.VideoWriter(empty, cv2.VideoWriter_fourcc(*'MJPG'), 25, (WIDTH, HEIGHT)).release()
    with pytest.raises(ValueError, match='empty.avi'):
        run(empty, str(tmp_path / 'out.mp4'), clip[1])
    assert os.listdir(tmp_path) == ['empty.avi']


def test_output_in_a_missing_folder(tmp_path, clip, video):
    with pytest.raises(FileNotFoundError, match='missing'):
        run(video, str(tmp_path / 'missing' / 'out.mp4'), clip[1])
    assert not osp.exists(tmp_path / 'missing')


@pytest.mark.skipif(os.geteuid() == 0, reason='root may write anywhere')
def test_output_without_permission(tmp_path, clip, video):
    locked = tmp_path / 'locked'
    locked.mkdir(mode=0o500)
    with pytest.raises(PermissionError, match='locked'):
        run(video, str(locked / 'out.mp4'), clip[1])
    assert os.listdir(locked) == []


def test_unwritable_output_folder(tmp_path, clip, video):
    # /proc refuses new files even to root.
    with pytest.raises(PermissionError, match='/proc/out.mp4'):
        run(video, '/proc/out.mp4', clip[1])


def test_output_equal_to_input(tmp_path, clip, video, frame_folder):
    before = open(video, 'rb').read()
    with pytest.raises(ValueError, match='is the input'):
        run(video, video, clip[1])
    assert open(video, 'rb').read() == before
    with pytest.raises(ValueError, match='is the input'):
        run(frame_folder, frame_folder + '/', clip[1])
    assert no_partial_files(tmp_path)


@pytest.mark.parametrize('output,message', [('out.mkv', r'\.mp4 or \.avi'), ('frames_out', r'\.mp4 or \.avi')])
def test_video_input_needs_a_video_output(tmp_path, clip, video, output, message):
    with pytest.raises(ValueError, match=message):
        run(video, str(tmp_path / output), clip[1])


def test_non_empty_output_folder_is_refused(tmp_path, clip, frame_folder):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'keep.txt').write_text('x')
    with pytest.raises(FileExistsError, match='not empty'):
        run(frame_folder, str(out), clip[1])
    assert os.listdir(out) == ['keep.txt']


def test_learned_needs_a_checkpoint(tmp_path, clip, video):
    with pytest.raises(ValueError, match='--checkpoint'):
        run(video, str(tmp_path / 'out.mp4'), clip[1], method='learned')


def test_detector_output_off_the_contract(tmp_path, video):
    with pytest.raises(ValueError, match=r'\(K, 5\)'):
        anonymize_video(video, str(tmp_path / 'out.mp4'), detector=lambda frame: np.zeros(5), progress=False)
    assert no_partial_files(tmp_path) and not osp.exists(tmp_path / 'out.mp4')
