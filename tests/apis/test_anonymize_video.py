"""anonymize_video on generated clips of moving synthetic faces, with a scripted detector that misses some, and on
images, folders of images, audio, truncated and damaged inputs."""
import os
import os.path as osp
import runpy

import av
import cv2
import numpy as np
import pytest

from mmanon.apis import anonymize_video
from mmanon.apis.anonymize_video import detection_interval
from av_clips import audio_packets, write_clip  # noqa: I100  (tests/apis is on sys.path)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
benchmark = runpy.run_path(osp.join(REPO, 'benchmarks', 'anonymize_video.py'))
synthetic_frames, draw_face = benchmark['synthetic_frames'], benchmark['draw_face']
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
    """The tool on a clip, by default with a scripted detector run on every frame (it returns a frame's boxes
    by the count of its calls)."""
    kwargs.setdefault('detector', ScriptedDetector(boxes, MISSED))
    kwargs.setdefault('detect_every', 1)
    return anonymize_video(input_path, output_path, progress=False, **kwargs)


def test_every_face_is_anonymized_in_every_frame_even_where_the_detector_missed(tmp_path, clip, frame_folder):
    frames, boxes = clip
    out = str(tmp_path / 'out')
    summary = run(frame_folder, out, boxes, method='blur', sequence=True)
    assert summary['kind'] == 'frames'
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


@pytest.mark.parametrize('suffix,codec,summary_codec', [('.mp4', 'h264', 'H.264 (libx264)'),
                                                         ('.mkv', 'h264', 'H.264 (libx264)'),
                                                         ('.avi', 'mjpeg', 'Motion JPEG')])
def test_video_keeps_frame_count_fps_and_resolution(tmp_path, clip, video, suffix, codec, summary_codec):
    frames, boxes = clip
    out = str(tmp_path / f'out{suffix}')
    summary = run(video, out, boxes, method='mask')
    assert summary['kind'] == 'video' and summary['codec'] == summary_codec and not summary['truncated']
    written, fps = read_video(out)
    assert len(written) == summary['frames'] == NUM_FRAMES
    assert fps == pytest.approx(25) and summary['fps'] == pytest.approx(25)
    assert written[0].shape == (HEIGHT, WIDTH, 3)
    with av.open(out) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == codec
        if codec == 'h264':  # the format browsers play
            assert stream.codec_context.pix_fmt == 'yuv420p'
    assert no_partial_files(tmp_path)
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
    kept its original pixels. Without look-back unless asked: the re-detected faces would cover the last
    missed frame."""
    frames, boxes = clip
    out = str(tmp_path / 'out')
    kwargs.setdefault('lookback', 0)
    summary = run(frame_folder, out, boxes, method='mask', max_age=1, sequence=True, **kwargs)
    visible = []
    for i in sorted(MISSED):
        result = cv2.imread(osp.join(out, f'img_{i + 1:05d}.png'))
        visible.append(any((face_pixels(result, b) == face_pixels(frames[i], b)).all(axis=2).mean() > 0.5
                           for b in boxes[i]))
    return visible, summary, out


def test_without_fallback_faces_show_once_tracks_expire(tmp_path, clip, frame_folder):
    visible, summary, _ = lost_faces_visible(tmp_path, clip, frame_folder)
    assert visible == [False, True, True, True, True] and summary['fallback_frames'] == 0


@pytest.mark.parametrize('lookback,visible', [(1, [False, True, True, True, False]),
                                              (3, [False, True, False, False, False])])
def test_lookback_covers_the_frames_before_a_face_is_found(tmp_path, clip, frame_folder, lookback, visible):
    """The faces are found again in frame 11, as new tracks: the frames before are anonymized at their first
    boxes."""
    assert lost_faces_visible(tmp_path, clip, frame_folder, lookback=lookback)[0] == visible


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
    summary = run(frame_folder, str(tmp_path / 'out'), boxes, method='blur', detector=detector, detect_every=3,
                  sequence=True)
    assert detector.calls == NUM_FRAMES // 3 and summary['anonymized_frames'] == NUM_FRAMES


@pytest.mark.parametrize('fps, every', [(6, 1), (22, 1), (25, 2), (30000 / 1001, 2), (60, 4)])
def test_detection_interval_follows_the_frame_rate(fps, every):
    assert detection_interval(fps) == every


@pytest.mark.parametrize('fps, every', [(6, 1), (25, 2)])
def test_default_detection_interval_of_a_video_file_and_of_frames(tmp_path, clip, frame_folder, fps, every):
    """About 15 detector runs per second of video: a 6-fps video gets one on every frame, where every second
    frame let a one-frame face fall between runs."""
    frames, boxes = clip
    source = tmp_path / 'in.mp4'
    write_clip(source, frames, fps=fps)
    for path, options in ((str(source), {}), (frame_folder, dict(fps=fps))):
        detector = ScriptedDetector(boxes[::every])
        summary = anonymize_video(path, str(tmp_path / 'out.mp4'), detector=detector, progress=False, **options)
        assert summary['detect_every'] == every and detector.calls == NUM_FRAMES // every
        assert summary['anonymized_frames'] == NUM_FRAMES


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


@pytest.mark.parametrize('output', ['out.gif', 'frames_out', 'out.png'])
def test_video_input_needs_a_video_output(tmp_path, clip, video, output):
    with pytest.raises(ValueError, match=r'\.mp4, \.mov, \.mkv, \.avi'):
        run(video, str(tmp_path / output), clip[1])


def test_non_empty_output_folder_is_refused(tmp_path, clip, frame_folder):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'keep.txt').write_text('x')
    with pytest.raises(FileExistsError, match='not empty'):
        run(frame_folder, str(out), clip[1])
    with pytest.raises(FileExistsError, match='not empty'):
        run(frame_folder, str(out), clip[1], sequence=True)
    assert os.listdir(out) == ['keep.txt']


def test_learned_needs_a_checkpoint(tmp_path, clip, video):
    with pytest.raises(ValueError, match='--checkpoint'):
        run(video, str(tmp_path / 'out.mp4'), clip[1], method='learned')


def test_detector_output_off_the_contract(tmp_path, video):
    with pytest.raises(ValueError, match=r'\(K, 5\)'):
        anonymize_video(video, str(tmp_path / 'out.mp4'), detector=lambda frame: np.zeros(5), progress=False)
    assert no_partial_files(tmp_path) and not osp.exists(tmp_path / 'out.mp4')


def test_audio_is_copied_unchanged_or_dropped(tmp_path, clip):
    frames, boxes = clip
    source = tmp_path / 'talk.mp4'
    assert write_clip(source, frames, fps=25, audio_seconds=1.0) > 10
    summary = run(str(source), str(tmp_path / 'out.mp4'), boxes, method='mask')
    assert summary['audio'] == 'aac copied'
    assert audio_packets(tmp_path / 'out.mp4') == audio_packets(source)
    summary = run(str(source), str(tmp_path / 'silent.mp4'), boxes, method='mask', keep_audio=False)
    assert summary['audio'] == 'dropped' and audio_packets(tmp_path / 'silent.mp4') == []
    assert run(str(source), str(tmp_path / 'out.mkv'), boxes, method='mask')['audio'] == 'aac copied'


def test_odd_frame_size_falls_back_to_yuv444_and_says_so(tmp_path):
    source = tmp_path / 'odd'
    source.mkdir()
    for i in range(3):
        cv2.imwrite(str(source / f'{i}.png'), np.full((121, 161, 3), 100, np.uint8))
    summary = anonymize_video(str(source), str(tmp_path / 'out.mp4'), detector=lambda f: np.zeros((0, 5)),
                              progress=False)
    assert summary['kind'] == 'frames'
    assert 'yuv444p' in summary['codec'] and 'browsers' in summary['codec']
    written, _ = read_video(str(tmp_path / 'out.mp4'))
    assert len(written) == 3 and written[0].shape == (121, 161, 3)


def test_truncated_video_is_reported(tmp_path, clip):
    frames, boxes = clip
    source = tmp_path / 'full.mp4'
    write_clip(source, frames, fps=25)
    data = source.read_bytes()
    cut = tmp_path / 'cut.mp4'
    cut.write_bytes(data[:int(len(data) * 0.6)])
    summary = run(str(cut), str(tmp_path / 'out.mp4'), boxes, method='mask')
    assert summary['truncated'] and summary['declared_frames'] == NUM_FRAMES
    assert 0 < summary['frames'] < NUM_FRAMES
    written, _ = read_video(str(tmp_path / 'out.mp4'))
    assert len(written) == summary['frames']
    for i, (result, frame_boxes) in enumerate(zip(written, boxes)):
        for box in frame_boxes:
            assert face_pixels(result, box).mean() < 40, f'face {box} of frame {i} is visible'
    assert not run(str(source), str(tmp_path / 'whole.mp4'), boxes, method='mask')['truncated']


def test_a_face_the_regions_do_not_cover_is_counted_for_its_track(tmp_path, clip, frame_folder):
    """Boxes smoothed towards the past lag behind a face that jumps; without margin the detected box then sticks
    out of its region. The summary counts those frames for the track and names the worst one."""
    frames, boxes = clip
    jumping = [b[:1] + np.array([[(i % 2) * 10, 0, (i % 2) * 10, 0]]) for i, b in enumerate(boxes)]
    summary = run(frame_folder, str(tmp_path / 'lag'), jumping, method='blur', sequence=True, smoothing=0.9,
                  margin=1.0, iou_threshold=0.05, extrapolate=False, detector=ScriptedDetector(jumping))
    worst = summary['worst_track']
    assert summary['tracks'] == 1 and worst['track_id'] == 0
    # The smoothed box stays between the two positions, more than a tenth of the face outside it.
    assert worst['seen'] == NUM_FRAMES and worst['uncovered'] >= NUM_FRAMES // 2
    summary = run(frame_folder, str(tmp_path / 'default'), boxes, method='blur', sequence=True)
    assert summary['worst_track']['uncovered'] == 0 and summary['worst_track']['seen'] == NUM_FRAMES - len(MISSED)
    assert summary['worst_track']['predicted'] == len(MISSED)


def test_frame_callback_reports_detections_and_regions(tmp_path, clip, frame_folder):
    frames, boxes = clip
    infos = []
    run(frame_folder, str(tmp_path / 'out'), boxes, method='blur', sequence=True, detect_every=2,
        detector=ScriptedDetector(boxes[::2]), frame_callback=infos.append)
    assert [info['index'] for info in infos] == list(range(NUM_FRAMES))
    assert all((info['detections'] is None) == (info['index'] % 2 == 1) for info in infos)
    np.testing.assert_allclose(infos[0]['detections'][:, :4], boxes[0])
    for info, frame_boxes in zip(infos, boxes):
        assert info['regions'].shape[1] == 4 and not info['blurred']
        for x1, y1, x2, y2 in frame_boxes:
            assert any(r[0] <= x1 and r[1] <= y1 and r[2] >= x2 and r[3] >= y2 for r in info['regions'])


def face_image(height, width, box, channels=3):
    image = np.full((height, width, 3), 90, np.uint8)
    draw_face(image, box, np.random.default_rng(0))
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if channels == 4:
        alpha = np.tile(np.arange(width, dtype=np.uint8)[None, :, None], (height, 1, 1))
        return np.concatenate([image, alpha], axis=2)
    return image


def box_detector(box):
    return lambda frame: np.array([list(box) + [0.9]], np.float32)


@pytest.mark.parametrize('name,channels', [('face.png', 3), ('face.jpg', 3), ('gray.png', 1), ('alpha.png', 4)])
def test_image_in_gives_an_image_out(tmp_path, name, channels):
    box = (40, 30, 96, 100)
    source = tmp_path / name
    image = face_image(150, 200, box, channels)
    cv2.imwrite(str(source), image)
    original = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
    out = tmp_path / f'out_{name}'
    summary = anonymize_video(str(source), str(out), method='mask', detector=box_detector(box), progress=False)
    assert summary['kind'] == 'image' and summary['frames'] == 1 and summary['faces_detected'] == 1
    assert (summary['width'], summary['height']) == (200, 150)
    result = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert result.shape == original.shape and result.dtype == np.uint8
    x1, y1, x2, y2 = box
    assert result[y1:y2, x1:x2, ...].astype(int).mean() < 40
    if name.endswith('.png'):  # lossless: everything outside the doubled region is bit-identical
        assert (result[:, 130:] == original[:, 130:]).all()
    if channels == 4:
        assert (result[..., 3] == original[..., 3]).all()
    assert no_partial_files(tmp_path)


def test_folder_of_images_of_any_sizes_gives_a_folder(tmp_path):
    folder = tmp_path / 'photos'
    folder.mkdir()
    boxes = {'a.png': (10, 10, 50, 60), 'b.jpg': (100, 40, 200, 160), 'c.png': (5, 5, 25, 30)}
    sizes = {'a.png': (80, 100), 'b.jpg': (240, 320), 'c.png': (40, 36)}
    for name, box in boxes.items():
        cv2.imwrite(str(folder / name), face_image(*sizes[name], box))
    (folder / 'notes.txt').write_text('not an image')
    names = []

    def detector(frame):
        name = sorted(boxes)[len(names)]
        names.append(name)
        assert frame.shape[:2] == sizes[name]
        return np.array([list(boxes[name]) + [0.9]], np.float32)

    out = tmp_path / 'out'
    summary = anonymize_video(str(folder), str(out), method='mask', detector=detector, progress=False)
    assert summary['kind'] == 'images' and summary['frames'] == 3 and summary['ignored'] == 1
    assert summary['width'] is None and 'tracks' not in summary
    assert sorted(os.listdir(out)) == sorted(boxes)
    for name, (x1, y1, x2, y2) in boxes.items():
        result = cv2.imread(str(out / name))
        assert result.shape[:2] == sizes[name]
        assert result[y1:y2, x1:x2].astype(int).mean() < 40, name


def test_frames_of_a_sequence_must_have_one_size(tmp_path, frame_folder):
    cv2.imwrite(osp.join(frame_folder, 'img_99999.png'), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match='img_99999.png.*one size'):
        anonymize_video(frame_folder, str(tmp_path / 'out'), sequence=True, detector=lambda f: np.zeros((0, 5)),
                        progress=False)
    assert no_partial_files(tmp_path) and not osp.exists(tmp_path / 'out')


@pytest.mark.parametrize('output', ['out.mp4', 'out_folder'])
def test_image_needs_an_image_output(tmp_path, output):
    source = tmp_path / 'face.png'
    cv2.imwrite(str(source), face_image(50, 50, (10, 10, 30, 30)))
    with pytest.raises(ValueError, match='image file'):
        anonymize_video(str(source), str(tmp_path / output), progress=False)


@pytest.mark.parametrize('option,value', [('margin', float('nan')), ('margin', float('inf')), ('margin', 0.5),
                                          ('feather', float('nan')), ('feather', 0.6),
                                          ('fallback_scale', -1.), ('fallback_scale', 0.),
                                          ('fallback_scale', float('nan')),
                                          ('fallback_frames', 0), ('detect_every', 0), ('detect_every', 1.5),
                                          ('lookback', -1), ('max_age', -1), ('fps', 0.), ('fps', float('nan')),
                                          ('iou_threshold', float('nan')), ('smoothing', float('nan'))])
def test_invalid_numbers_are_refused_before_any_work(tmp_path, clip, video, option, value):
    with pytest.raises(ValueError, match=option):
        run(video, str(tmp_path / 'out.mp4'), clip[1], fallback='head', **{option: value})
    assert sorted(os.listdir(tmp_path)) == ['in.avi']
