"""tools/anonymize_video.py end to end: the default Haar detector, the learned method, errors, --help."""
import argparse
import os.path as osp
import runpy
import subprocess
import sys

import cv2
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
    assert tool['main']([path, out, '--method', 'mask', '--no-progress']) == 0
    printed = capsys.readouterr().out
    assert 'faces detected: 12, tracks: 1' in printed and 'frames covered by a fallback: 0' in printed
    original, result = read(path), read(out)
    assert len(result) == 12
    assert min(face_change(original, result, boxes)) > 100  # skin ~180 painted black


def test_learned_method_uses_the_checkpoint(tmp_path, clip, learned_checkpoint, capsys):
    path, boxes = clip
    out = str(tmp_path / 'out.mp4')
    assert tool['main']([path, out, '--method', 'learned', '--checkpoint', learned_checkpoint,
                         '--no-progress']) == 0
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
