"""Real faces stay hidden: dlib's face recogniser (ResNet, 99.38% on LFW) compares a real face before and after
the video tool's default anonymization, the face at several sizes.

The face is the astronaut of scikit-image's bundled portrait (NASA, public domain), scaled so that it is about
50, 100 and 200 pixels wide. The recogniser embeds the anonymized image at the raw face's box, aligned both with
the landmarks it finds there and with the raw face's, and the closer embedding counts (the strongest attacker of
``tools/analysis/eval_real_faces.py``); within 0.6 of the raw face's embedding is dlib's "same person". A fixed
15-pixel blur, the default before face-relative sizes, fails at the larger sizes.
"""
import os.path as osp
import runpy

import cv2
import numpy as np
import pytest

from mmanon.apis import anonymize_video, build_face_detector
from mmanon.apis.anonymize_video import anonymize_regions, build_method_anonymizer, face_regions
from mmanon.models.anonymizers import GaussianBlur

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
evaluation = runpy.run_path(osp.join(REPO, 'tools', 'analysis', 'eval_real_faces.py'))
# dlib's CNN detector's box of the astronaut's face in the 512x512 portrait.
ASTRONAUT_FACE = np.array([168, 69, 264, 165], np.float32)
SCALES = (0.5, 1.0, 2.0)
SAME_PERSON = 0.6


@pytest.fixture(scope='module')
def recogniser():
    return evaluation['DlibFaces']()


def astronaut(scale):
    skimage_data = pytest.importorskip('skimage.data')
    image = skimage_data.astronaut()
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=interpolation), ASTRONAUT_FACE * scale


def distance(recogniser, raw_rgb, anonymized_rgb, box):
    return evaluation['RawFaces'](recogniser, raw_rgb, box[None]).distances(anonymized_rgb)[0]


@pytest.mark.parametrize('scale', SCALES)
@pytest.mark.parametrize('method', ['blur', 'pixelate', 'mask'])
def test_default_methods_hide_a_real_face_at_every_size(tmp_path, recogniser, method, scale):
    rgb, box = astronaut(scale)
    source, out = str(tmp_path / 'in.png'), str(tmp_path / 'out.png')
    cv2.imwrite(source, rgb[..., ::-1])
    summary = anonymize_video(source, out, method=method, progress=False)
    assert summary['faces_detected'] == 1
    anonymized = cv2.imread(out)[..., ::-1]
    assert distance(recogniser, rgb, np.ascontiguousarray(anonymized), box) > SAME_PERSON


@pytest.mark.parametrize('scale', SCALES)
def test_the_raw_face_is_recognised(recogniser, scale):
    """The attacker itself works at every size: a lightly re-encoded copy is the same person."""
    rgb, box = astronaut(scale)
    _, encoded = cv2.imencode('.jpg', rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 75])
    copy = np.ascontiguousarray(cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1])
    assert distance(recogniser, rgb, copy, box) < 0.3


def test_a_fixed_15_pixel_blur_leaves_a_large_face_recognisable(recogniser):
    """Why the blur's kernel is a fraction of the face region: 15 pixels hide a small face, not a large one."""
    rgb, box = astronaut(2.0)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    regions = face_regions(build_face_detector('centerface')(bgr), 2.0, *bgr.shape[:2])
    anonymized = anonymize_regions(bgr, regions, GaussianBlur(kernel_size=15), 0.2)
    assert distance(recogniser, rgb, np.ascontiguousarray(anonymized[..., ::-1]), box) <= SAME_PERSON


@pytest.mark.parametrize('feather', [0.2, 0.0])
@pytest.mark.parametrize('method', ['blur', 'pixelate', 'mask'])
def test_the_tools_opencv_path_gives_the_training_paths_pixels_within_one_grey_level(method, feather):
    """The video tool anonymizes the handcrafted methods' regions in uint8 with OpenCV (``anonymize_bgr``);
    the float path of training (``anonymize_crops`` and ``paste_regions``) gives the same pixels to within one
    grey level, on a real photo, with regions cut by the frame's edges and overlapping ones. The difference is
    the OpenCV path's rounding of the patch before blending: without feathering there is none."""
    rgb, box = astronaut(1.0)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    boxes = np.array([box, [-20, 300, 60, 420], [450, -10, 530, 60], [480, 480, 530, 530], [200, 120, 300, 230],
                      [5, 5, 8, 9]])
    regions = face_regions(boxes, 2.0, *bgr.shape[:2])
    anonymizer = build_method_anonymizer(method)[0]
    opencv = anonymize_regions(bgr, regions, anonymizer, feather)
    torch_path = anonymize_regions(bgr, regions, lambda crops: anonymizer(crops), feather)
    inside = np.zeros(bgr.shape[:2], bool)
    for x1, y1, x2, y2 in regions.tolist():
        inside[y1:y2, x1:x2] = True
    assert inside.mean() > 0.2 and not (opencv[inside] == bgr[inside]).all()
    np.testing.assert_array_equal(opencv[~inside], bgr[~inside])
    difference = np.abs(opencv.astype(int) - torch_path.astype(int))
    assert difference.max() <= (1 if feather else 0)
    assert (difference[inside] > 0).mean() < 0.2
