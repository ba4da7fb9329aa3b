"""Face tubes: a box for every face in every sampled frame, carried through the stock AVA pipelines, and the
preprocessor anonymizing each frame where its face actually is."""
import math

import cv2
import numpy as np
import pytest
import torch
from mmaction.models import ActionDataPreprocessor
from mmaction.registry import DATASETS
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope

from mmanon.datasets.face_tubes import FrameFaces, interpolate_boxes, link_keyframe_faces, match_keyframe_faces
from mmanon.models import AnonymizerDataPreprocessor

# --- The pieces ----------------------------------------------------------------------------------------------


def test_interpolation_is_exact_at_keyframes_and_grows_with_the_motion_between_them():
    times = np.array([902., 903., 905.])
    boxes = np.array([[0.1, 0.2, 0.2, 0.3], [0.3, 0.2, 0.4, 0.3], [0.3, 0.4, 0.4, 0.5]])
    query = np.array([901.5, 902., 902.25, 902.5, 903., 904., 905., 906.])
    np.testing.assert_allclose(interpolate_boxes(times, boxes, query), [
        [0.0, 0.2, 0.3, 0.3],  # 0.5 s before the first keyframe, at the first pair's 0.2/s along x
        [0.1, 0.2, 0.2, 0.3],
        [0.1, 0.2, 0.3, 0.3],  # a quarter of the way: moved 0.05 and grown by 0.25 * 0.2 on each side
        [0.1, 0.2, 0.4, 0.3],  # half-way: the box around both keyframes' boxes
        [0.3, 0.2, 0.4, 0.3],
        [0.3, 0.2, 0.4, 0.5],  # half-way to 905: 0.2 down in 2 s, grown by half of it
        [0.3, 0.4, 0.4, 0.5],
        [0.3, 0.3, 0.4, 0.6],  # 1 s after the last keyframe, at 0.1/s
    ], atol=1e-6)
    # One keyframe: no motion to measure, the box is held.
    np.testing.assert_allclose(interpolate_boxes(times[:1], boxes[:1], query), np.repeat(boxes[:1], 8, 0))


def test_keyframe_faces_are_grouped_by_person_and_merged_within_a_keyframe():
    chains = link_keyframe_faces(
        np.array([903, 902, 902, 902]),
        np.array([[0.3, 0.3, 0.4, 0.4], [0.1, 0.1, 0.2, 0.2], [0.15, 0.05, 0.25, 0.15], [0.5, 0.5, 0.6, 0.6]]),
        [('entity', 0), ('entity', 0), ('entity', 0), None])
    assert list(chains) == [('entity', 0)]
    times, boxes = chains[('entity', 0)]
    np.testing.assert_array_equal(times, [902, 903])
    np.testing.assert_allclose(boxes, [[0.1, 0.05, 0.25, 0.2], [0.3, 0.3, 0.4, 0.4]])


def test_frame_faces_are_linked_by_the_tracker_and_held_where_missed():
    box = np.array([0.1, 0.1, 0.2, 0.2])
    detections = {10: box[None], 11: (box + 0.01)[None], 13: np.stack([box + 0.02, box + 0.5]),
                  16: box[None] + 0.7}
    faces = FrameFaces.link(detections, dict(smoothing=0., max_age=1))
    ids, tubes = faces.tubes_at([9, 10, 12, 13, 14, 15, 12, 17])
    assert ids.tolist() == [0, 1]  # the tubes alive in the frames asked for
    # Frame 12 has no detection: the face is held, moved on by its last step; after max_age misses it is
    # dropped. Frames after the last one with rows (17) are not known.
    nan = np.full(4, np.nan)
    np.testing.assert_allclose(tubes[0], [nan, box, box + 0.02, box + 0.02, box + 0.02, nan, box + 0.02, nan],
                               atol=1e-6)
    np.testing.assert_allclose(tubes[1], [nan, nan, nan, box + 0.5, box + 0.5, nan, nan, nan], atol=1e-6)
    assert faces.tubes_at([16])[0].tolist() == [2]
    assert match_keyframe_faces(np.array([box + 0.5, box + 0.3, box]), tubes[:, 1]).tolist() == [-1, -1, 0]


# --- Moving faces through the dataset and the preprocessor ---------------------------------------------------

H, W = 96, 192
FPS, NUM_FRAMES = 30, 180  # seconds 900 to 906; keyframes 902 to 904
FACE = 14
COLOUR_A, COLOUR_B, BACKGROUND = (40, 200, 250), (250, 40, 200), (128, 128, 128)  # BGR
SAMPLERS = {'SlowOnly 4x16': dict(clip_len=4, frame_interval=16), 'SlowFast 8x8': dict(clip_len=32, frame_interval=2)}


def face_a(video, i):
    """Face A of a video in frame i (1-based): it crosses the frame, along a zigzag in 'zigzag'."""
    x = 8 + 0.9 * (i - 1)
    y = 40 if video == 'linear' else 30 + 14 * math.sin(i / 5)
    return x, y, x + FACE, y + FACE


def face_b(video, i):
    """Face B: only in 'zigzag', only between two keyframes."""
    return (150, 60, 150 + FACE, 60 + FACE) if video == 'zigzag' and 95 <= i <= 115 else None


def seconds(i):
    return 900 + (i - 1) / FPS


@pytest.fixture(scope='module')
def moving(tmp_path_factory):
    """Two videos whose faces move 0.9 pixels a frame: 'linear' annotated in its keyframes only, 'zigzag' in
    every frame (decimal timestamps)."""
    root = tmp_path_factory.mktemp('moving')
    ann, faces = [], []
    for video in ('linear', 'zigzag'):
        (root / 'frames' / video).mkdir(parents=True)
        for i in range(1, NUM_FRAMES + 1):
            frame = np.full((H, W, 3), BACKGROUND, np.uint8)
            for box, colour in ((face_a(video, i), COLOUR_A), (face_b(video, i), COLOUR_B)):
                if box is not None:
                    # Anti-aliased at sub-pixel positions, like a real face: area-average a 4x frame.
                    big = np.zeros((H * 4, W * 4), np.uint8)
                    x1, y1, x2, y2 = (int(round(v * 4)) for v in box)
                    big[y1:y2, x1:x2] = 255
                    alpha = cv2.resize(big, (W, H), interpolation=cv2.INTER_AREA)[..., None] / 255
                    frame = (frame * (1 - alpha) + np.array(colour) * alpha).round().astype(np.uint8)
            cv2.imwrite(str(root / 'frames' / video / f'img_{i:05d}.png'), frame)
            norm = lambda b: ','.join(f'{v / s:.4f}' for v, s in zip(b, (W, H, W, H)))  # noqa: E731
            keyframe = (i - 1) % FPS == 0 and 902 <= seconds(i) <= 904
            if keyframe:
                x1, y1, x2, y2 = face_a(video, i)
                person = (max(x1 - 10, 0), max(y1 - 5, 0), min(x2 + 10, W), H)
                ann.append(f'{video},{int(seconds(i))},{norm(person)},1,0')
            if keyframe or video == 'zigzag':
                when = int(seconds(i)) if keyframe else f'{seconds(i):.4f}'
                faces.append(f'{video},{when},{norm(face_a(video, i))},5,0')
                if face_b(video, i) is not None:
                    faces.append(f'{video},{when},{norm(face_b(video, i))},-1,-1')
    (root / 'ann.csv').write_text('\n'.join(ann) + '\n')
    (root / 'faces.csv').write_text('\n'.join(faces) + '\n')
    return dict(ann_file=str(root / 'ann.csv'), face_file=str(root / 'faces.csv'), num_classes=3, fps=FPS,
                timestamp_end=906, data_prefix=dict(img=str(root / 'frames')), filename_tmpl='img_{:05}.png')


def pipeline(sampler, train):
    geometry = [dict(type='RandomRescale', scale_range=(96, 144)), dict(type='RandomCrop', size=96),
                dict(type='Flip', flip_ratio=0.5)] if train else [dict(type='Resize', scale=(-1, 80))]
    return [dict(type='SampleAVAFrames', test_mode=not train, **sampler), dict(type='RawFrameDecode'), *geometry,
            dict(type='FormatShape', input_format='NCTHW', collapse=True), dict(type='PackActionInputs')]


def build(sampler, train, **cfg):
    with DefaultScope.overwrite_default_scope('mmaction'):
        return DATASETS.build(dict(type='mmanon.AVAFaceDataset', pipeline=pipeline(sampler, train), **cfg))


def colour_pixels(clip, colour, tolerance=40):
    """(T, H, W) bool: the pixels of a (C, T, H, W) RGB clip that show a face colour (given as BGR)."""
    distance = (clip.float() - torch.tensor(colour[::-1]).float()[:, None, None, None]).abs().amax(dim=0)
    return distance <= tolerance


def box_mask(boxes, height, width, grow=0.):
    """(T, H, W) bool: the pixel centres inside each frame's box (NaN: none)."""
    centre_y = torch.arange(height)[:, None] + 0.5
    centre_x = torch.arange(width)[None, :] + 0.5
    masks = []
    for x1, y1, x2, y2 in boxes.tolist():
        masks.append((centre_x >= x1 - grow) & (centre_x <= x2 + grow) & (centre_y >= y1 - grow) &
                     (centre_y <= y2 + grow))
    return torch.stack(masks)


def samples(dataset, seeds):
    for seed in seeds:
        np.random.seed(seed)
        for i in range(len(dataset)):
            yield dataset.get_data_info(i)['video_id'], dataset[i]


@pytest.mark.parametrize('sampler', list(SAMPLERS))
@pytest.mark.parametrize('train', [True, False], ids=['train', 'test'])
def test_tubes_follow_each_face_through_sampling_rescale_crop_and_flip(moving, sampler, train):
    dataset = build(SAMPLERS[sampler], train, **moving)
    checked = 0
    for video, packed in samples(dataset, range(3) if train else [0]):
        clip, sample = packed['inputs'], packed['data_samples']
        num_frames, height, width = clip.shape[1:]
        tubes = sample.face_tubes.bboxes
        assert tubes.dtype == torch.float32 and tubes.shape[1:] == (num_frames, 4)
        # The keyframe's face A leads; B, in no keyframe, is a tube of its own in the clips that show it.
        assert len(sample.gt_faces) == 1 and len(tubes) in ((1, 2) if video == 'zigzag' else (1, ))
        for colour in (COLOUR_A, COLOUR_B):
            face = colour_pixels(clip, colour)
            covered = torch.zeros_like(face)
            for tube in tubes:
                covered |= box_mask(tube, height, width, grow=1)
            assert not (face & ~covered).any(), f'{video}: face pixels outside every tube box'
            checked += int(face.any())
        if video == 'zigzag':
            # Per-frame rows: the box is the face's own, exactly; a ring 2 pixels outside it shows no face.
            ring = box_mask(tubes[0], height, width, grow=2.5) & ~box_mask(tubes[0], height, width, grow=1.5)
            assert not (ring & colour_pixels(clip, COLOUR_A, tolerance=60)).any()
    assert checked > 0


def anonymize(batch, training):
    norm = dict(mean=[0, 0, 0], std=[1, 1, 1], format_shape='NCTHW')
    stock = ActionDataPreprocessor(**norm)(batch, training)['inputs']
    ours = AnonymizerDataPreprocessor(anonymizer=dict(type='SolidMask', fill=0), **norm)
    return stock, ours(batch, training)['inputs']


@pytest.mark.parametrize('sampler', list(SAMPLERS))
def test_every_face_pixel_of_every_sampled_frame_is_anonymized(moving, sampler):
    """The acceptance test of face tubes: faces that leave the 2x keyframe region within the clip."""
    for train in (True, False):
        dataset = build(SAMPLERS[sampler], train, **moving)
        batch = pseudo_collate([packed for _, packed in samples(dataset, range(2))])
        stock, anonymized = anonymize(batch, train)
        seen = 0
        for n, clip in enumerate(batch['inputs']):
            face = colour_pixels(clip, COLOUR_A, tolerance=100) | colour_pixels(clip, COLOUR_B, tolerance=100)
            changed = (anonymized[n] != stock[n]).any(dim=0)
            assert changed[face].all(), f'clip {n}: {int((~changed[face]).sum())} face pixels left raw'
            seen += int(face.sum())
        assert seen > 1000

        # Today's regions, the keyframe's faces 2x in every frame, leave the moving faces raw in most clips.
        for sample in batch['data_samples']:
            del sample.face_tubes
        stock, keyframe_only = anonymize(batch, train)
        left_raw = sum(int((~(keyframe_only[n] != stock[n]).any(dim=0))[colour_pixels(clip, COLOUR_A)].sum())
                       for n, clip in enumerate(batch['inputs']))
        assert left_raw > 100
