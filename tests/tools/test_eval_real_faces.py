"""tools/analysis/eval_real_faces.py on a real photo and a short video of it, made at test time from
scikit-image's bundled astronaut portrait (NASA, public domain)."""
import json
import os
import os.path as osp
import re
import runpy

import cv2
import numpy as np
import pytest

import eval_real_faces  # noqa: I100  (tools/analysis is on sys.path)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
benchmark = runpy.run_path(osp.join(REPO, 'benchmarks', 'anonymize_video.py'))
VIDEO_FRAMES = 8


@pytest.fixture(scope='module')
def real_faces(tmp_path_factory):
    skimage_data = pytest.importorskip('skimage.data')
    root = tmp_path_factory.mktemp('real_faces')
    os.makedirs(root / 'photos')
    photo = cv2.resize(skimage_data.astronaut()[..., ::-1], (256, 256), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(root / 'photos' / 'astronaut.png'), photo)
    os.makedirs(root / 'videos')
    benchmark['write_clip'](str(root / 'videos' / 'moving.mp4'),
                            benchmark['photo_frames'](VIDEO_FRAMES, 240, 180, face_height=0.35))
    (root / 'notes.txt').write_text('neither a photo nor a video')
    return root


@pytest.fixture(scope='module')
def evaluation(real_faces, tmp_path_factory):
    out = tmp_path_factory.mktemp('eval')
    args = [str(real_faces), '--out-dir', str(out), '--methods', 'mask', 'blur', 'noise', '--video-samples', '2']
    assert eval_real_faces.main(args) == 0
    with open(out / 'results.json') as f:
        return {row['method']: row for row in json.load(f)['rows']}, out, args


def test_every_method_and_deface_has_a_row(evaluation):
    rows, out, _ = evaluation
    assert list(rows) == ['mask', 'blur', 'noise', 'deface blur', 'deface mosaic']
    table = (out / 'results.md').read_text()
    assert all(f'| {name} |' in table for name in rows)


def test_reference_faces_recall_and_coverage(evaluation):
    rows, _, _ = evaluation
    for row in rows.values():
        # The photo's face and the face in the two sampled frames of the video.
        assert row['faces'] == 3
        assert row['recall'] == 1 and row['coverage'] == 1, row['method']
        assert {r['file'].split(os.sep)[-1] for r in row['records']} == {'astronaut.png', 'moving.mp4'}


def test_leakage_tells_a_strong_method_from_a_weak_one(evaluation):
    rows, _, _ = evaluation
    assert rows['mask']['leakage'] == 0 and rows['blur']['leakage'] == 0
    assert rows['mask']['leakage_identifiable'] == 0 and rows['blur']['leakage_identifiable'] == 0
    assert rows['mask']['median_distance'] > 0.6
    # Pixel noise leaves the face's structure: dlib still matches it.
    assert rows['noise']['leakage'] > 0 and rows['noise']['median_distance'] < 0.6


def test_every_face_has_a_featureless_control(evaluation):
    rows, out, _ = evaluation
    for row in rows.values():
        # The astronaut's face, large and sharp, is far from a flat region in the photo and in the video.
        assert all(r['control_distance'] > 0.6 for r in row['records']), row['method']
        assert row['identifiable'] == 3
        # The control belongs to the face, not to the method.
        assert [r['control_distance'] for r in row['records']] == [r['control_distance'] for r in
                                                                    rows['mask']['records']]
    assert '| identifiable faces | leakage, identifiable faces | leakage, all faces |' in (out /
                                                                                         'results.md').read_text()


def test_temporal_leakage_of_the_video(evaluation):
    rows, _, _ = evaluation
    for row in rows.values():
        worst = row['worst_track']['moving.mp4']
        assert worst['seen'] == VIDEO_FRAMES and worst['uncovered'] == 0, row['method']
    assert rows['blur']['worst_track']['moving.mp4']['tracks'] == 1


def test_reference_faces_are_cached(evaluation, capsys):
    _, out, args = evaluation
    with open(out / 'reference_faces.json') as f:
        assert len(json.load(f)) == 2  # one entry per file, by content
    assert eval_real_faces.main(args[:3] + ['--methods', 'mask', '--no-deface', '--video-samples', '2']) == 0
    printed = capsys.readouterr().out
    assert 'dlib\'s CNN detector' not in printed and 'CenterFace at full resolution' not in printed


def test_leakage_compares_the_anonymized_image_at_the_raw_box():
    faces = eval_real_faces.DlibFaces()
    skimage_data = pytest.importorskip('skimage.data')
    raw = np.ascontiguousarray(skimage_data.astronaut())
    box = np.array([[168, 69, 264, 165]], np.float32)
    reference = eval_real_faces.RawFaces(faces, raw, box)
    assert reference.distances(raw)[0] == pytest.approx(0, abs=1e-6)
    flat = raw.copy()
    flat[40:200, 140:290] = raw[40:200, 140:290].mean(axis=(0, 1))
    assert reference.distances(flat)[0] > 0.6


def test_featureless_control_of_a_real_photo_is_far_from_the_face():
    faces = eval_real_faces.DlibFaces()
    skimage_data = pytest.importorskip('skimage.data')
    raw = np.ascontiguousarray(skimage_data.astronaut())
    box = np.array([[168, 69, 264, 165]], np.float32)
    control = eval_real_faces.featureless_control(raw, box)
    # The box enlarged twice about its centre, (120, 21)-(312, 213), is one flat colour, its mean; the rest is
    # the raw image.
    region = raw[21:213, 120:312].reshape(-1, 3)
    assert (control[21:213, 120:312] == region.mean(axis=0).round()).all()
    outside = np.ones(raw.shape[:2], bool)
    outside[21:213, 120:312] = False
    assert (control[outside] == raw[outside]).all()
    assert (eval_real_faces.featureless_control(raw, box, 0)[21:213, 120:312] == 0).all()
    reference = eval_real_faces.RawFaces(faces, raw, box)
    distance = reference.control_distances(raw)[0]
    # The closest of the controls in every colour.
    assert distance == pytest.approx(min(reference.distances(eval_real_faces.featureless_control(raw, box, c))[0]
                                         for c in eval_real_faces.CONTROL_COLOURS), abs=1e-6)
    assert distance > 0.6


def test_leakage_over_identifiable_faces():
    distances = [0.50, 0.70, 0.55, 0.65, 0.30, 0.62]
    # Faces 2, 4 and 5 are within 0.6 of their featureless control (0.6 itself is within): not identifiable.
    controls = [0.80, 0.90, 0.50, 0.70, 0.59, 0.60]
    figures = eval_real_faces.leakage_figures(distances, controls)
    assert figures == dict(leakage=pytest.approx(3 / 6), identifiable=3, leakage_identifiable=pytest.approx(1 / 3))
    assert eval_real_faces.leakage_figures([0.5], [0.4]) == dict(leakage=1.0, identifiable=0,
                                                                 leakage_identifiable=None)
    with pytest.raises(ValueError, match='2 distances against 1 control'):
        eval_real_faces.leakage_figures([0.5, 0.7], [0.8])


def test_no_media_is_an_error(tmp_path, capsys):
    (tmp_path / 'notes.txt').write_text('x')
    assert eval_real_faces.main([str(tmp_path), '--out-dir', str(tmp_path / 'out')]) == 1
    assert 'no photos or videos' in capsys.readouterr().err


def test_anonymizer_options_reach_each_methods_anonymizer(evaluation):
    """A 1-pixel box blur changes nothing: every identifiable face leaks, where the default blur hid them all."""
    rows, out, args = evaluation
    assert rows['blur']['identifiable'] > 0 and rows['blur']['leakage_identifiable'] == 0
    assert eval_real_faces.main(args[:3] + ['--methods', 'blur', '--no-deface', '--video-samples', '2',
                                            '--anonymizer-options', 'blur.kernel_size=1']) == 0
    with open(out / 'results.json') as f:
        results = json.load(f)
    assert results['options'] == dict(anonymizer_options={'blur.kernel_size': 1})
    assert results['rows'][0]['leakage_identifiable'] == 1


@pytest.mark.parametrize('option,message', [('blur.kernel=3', 'unknown option.*kernel.*kernel_ratio, kernel_size'),
                                            ('blur.kernel_ratio=nan', 'kernel_ratio'),
                                            ('blur.kernel_size=4', 'positive odd int'),
                                            ('pixelate.block_ratio=0.2', 'evaluated methods'),
                                            ('kernel_ratio=0.5', 'METHOD.ARGUMENT')])
def test_bad_anonymizer_options_are_refused_before_any_work(tmp_path, capsys, option, message):
    assert eval_real_faces.main([str(tmp_path), '--out-dir', str(tmp_path / 'out'), '--methods', 'blur',
                                 '--anonymizer-options', option]) == 1
    assert re.search(message, capsys.readouterr().err)
    assert not osp.exists(tmp_path / 'out')
