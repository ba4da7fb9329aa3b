"""tools/anonymize_video.py end to end: detectors, the learned method, photos, errors, signals, exit statuses,
--help."""
import argparse
import os
import os.path as osp
import runpy
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO, 'tools', 'anonymize_video.py')
tool = runpy.run_path(TOOL)
write_synthetic_clip = runpy.run_path(osp.join(REPO, 'benchmarks', 'anonymize_video.py'))['write_synthetic_clip']


@pytest.fixture
def clip(tmp_path):
    path = str(tmp_path / 'in.mp4')
    boxes = write_synthetic_clip(path, 12, 160, 120, num_faces=1, fps=24)
    return path, boxes


def face_change(original, output, boxes):
    """Per frame, the mean absolute change of the true face box."""
    changes = []
    for a, b, (box, ) in zip(original, output, boxes):
        x1, y1, x2, y2 = box.astype(int)
        changes.append(abs(a[y1:y2, x1:x2].astype(int) - b[y1:y2, x1:x2]).mean())
    return changes


def read(path):
    capture = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def test_haar_detector_and_solid_mask(tmp_path, clip, capsys):
    path, boxes = clip
    out = str(tmp_path / 'out.avi')
    assert tool['main']([path, out, '--method', 'mask', '--detector', 'haar', '--no-progress']) == 0
    printed = capsys.readouterr().out
    # The detector runs on every second frame of a 24-fps video by default (about 15 times per second).
    assert ('faces detected: 6, frames anonymized: 12, detector run on 1 frame in 2, tracks: 1 (and 0 detected in '
            'fewer than 3 frames), frames covered by a fallback: 0') in printed
    assert 'worst track: #0, detected in 6 frames, not covered in 0 of them, covered by its prediction alone in 6' \
        in printed
    original, result = read(path), read(out)
    assert len(result) == 12
    assert min(face_change(original, result, boxes)) > 100  # skin ~180 painted black


def test_learned_method_uses_the_checkpoint(tmp_path, clip, learned_checkpoint, capsys):
    path, boxes = clip
    out = str(tmp_path / 'out.mp4')
    assert tool['main']([path, out, '--method', 'learned', '--checkpoint', learned_checkpoint, '--detector',
                         'haar', '--no-progress']) == 0
    assert '(learned)' in capsys.readouterr().out
    original, result = read(path), read(out)
    assert len(result) == 12 and min(face_change(original, result, boxes)) > 3


def test_errors_exit_non_zero_naming_the_path(tmp_path):
    missing = str(tmp_path / 'missing.mp4')
    proc = subprocess.run([sys.executable, TOOL, missing, str(tmp_path / 'out.mp4')], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and missing in proc.stderr and 'Traceback' not in proc.stderr
    assert not osp.exists(tmp_path / 'out.mp4')


@pytest.mark.parametrize('script', ['tools/anonymize_video.py', 'tools/deployment/export_onnx.py',
                                    'tools/data/detect_faces.py', 'benchmarks/anonymize_video.py'])
def test_help_explains_every_flag(script, monkeypatch):
    parsers = []

    def capture(parser, *args, **kwargs):
        parsers.append(parser)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, 'parse_args', capture)
    with pytest.raises(SystemExit):
        runpy.run_path(osp.join(REPO, script))['parse_args']([])
    (parser, ) = parsers
    assert parser.description
    for action in parser._actions:
        assert action.help and action.help.strip(), f'{script}: {action.option_strings or action.dest} has no help'


def astronaut_bgr():
    skimage_data = pytest.importorskip('skimage.data')
    return np.ascontiguousarray(skimage_data.astronaut()[:, :, ::-1])


def test_photo_with_the_default_detector(tmp_path, capsys):
    """A real face (scikit-image's astronaut, NASA, public domain) found by CenterFace and blurred."""
    source = str(tmp_path / 'astronaut.png')
    cv2.imwrite(source, astronaut_bgr())
    out = str(tmp_path / 'anonymized.png')
    assert tool['main']([source, out, '--no-progress']) == 0
    assert 'faces detected: 1, images anonymized: 1' in capsys.readouterr().out
    original, result = cv2.imread(source), cv2.imread(out)
    assert result.shape == original.shape
    x1, y1, x2, y2 = 168, 69, 264, 165
    assert np.abs(result[y1:y2, x1:x2].astype(int) - original[y1:y2, x1:x2]).mean() > 10
    assert (result[:, 400:] == original[:, 400:]).all()


def run_tool(args, **kwargs):
    return subprocess.run([sys.executable, TOOL, *args, '--no-progress'], capture_output=True, text=True,
                          timeout=300, **kwargs)


@pytest.mark.parametrize('option', [['--margin', 'nan'], ['--fallback-scale', '-1'], ['--fallback-scale', '0'],
                                    ['--fallback-scale', 'nan'], ['--feather', 'inf'], ['--detect-every', '0'],
                                    ['--detector-options', 'input_scale=nan'],
                                    ['--detector-options', 'score_threshold=abc'],
                                    ['--detector-options', 'resize=0.5']])
def test_bad_options_exit_non_zero_and_write_nothing(tmp_path, clip, option):
    path, _ = clip
    proc = run_tool([path, str(tmp_path / 'out.mp4'), '--fallback', 'head', *option])
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    name = option[1].split('=')[0] if option[0] == '--detector-options' else option[0][2:].replace('-', '_')
    assert name in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ['in.mp4']


@pytest.mark.parametrize('content', [b'', b'not a checkpoint\n', b'PK\x03\x04' + bytes(100)])
def test_damaged_checkpoint_is_a_clear_error(tmp_path, clip, content):
    path, _ = clip
    checkpoint = tmp_path / 'model.pth'
    checkpoint.write_bytes(content)
    proc = run_tool([path, str(tmp_path / 'out.mp4'), '--method', 'learned', '--checkpoint', str(checkpoint)])
    assert proc.returncode == 1 and 'model.pth' in proc.stderr and 'Traceback' not in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ['in.mp4', 'model.pth']


def test_sigterm_leaves_nothing_behind(tmp_path):
    """SIGTERM mid-run: the temporary output is removed and the exit status says so."""
    path = str(tmp_path / 'long.avi')
    write_synthetic_clip(path, 600, 320, 240, num_faces=2)
    proc = subprocess.Popen([sys.executable, TOOL, path, str(tmp_path / 'out.mp4'), '--detector', 'haar'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait for the temporary output to appear: the run has started writing.
    for _ in range(600):
        if any('.partial' in n for n in os.listdir(tmp_path)) or proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143 and 'terminated' in stderr, stderr
    assert sorted(os.listdir(tmp_path)) == ['long.avi']


def test_truncated_input_exits_3_unless_allowed(tmp_path):
    import av
    # Noise frames make large packets, so a file cut short keeps whole frames (its index is at the front).
    rng = np.random.default_rng(0)
    full = str(tmp_path / 'full.mp4')
    with av.open(full, 'w', options=dict(movflags='+faststart')) as out:
        stream = out.add_stream('libx264', rate=24)
        stream.width, stream.height, stream.pix_fmt = 160, 120, 'yuv420p'
        for _ in range(24):
            frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='bgr24')))
        out.mux(stream.encode(None))
    cut = tmp_path / 'cut.mp4'
    data = open(full, 'rb').read()
    cut.write_bytes(data[:int(len(data) * 0.6)])
    proc = run_tool([str(cut), str(tmp_path / 'out.mp4'), '--detector', 'haar'])
    assert proc.returncode == 3 and 'TRUNCATED INPUT' in proc.stdout and 'declares 24 frames' in proc.stdout
    with av.open(str(tmp_path / 'out.mp4')) as written:
        assert 0 < written.streams.video[0].frames < 24
    proc = run_tool([str(cut), str(tmp_path / 'out2.mp4'), '--detector', 'haar', '--allow-truncated'])
    assert proc.returncode == 0 and 'TRUNCATED INPUT' in proc.stdout
