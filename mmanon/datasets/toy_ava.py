"""A deterministic generator of small benchmarks in the exact AVA layout, with identifiable faces.

Each video shows 1 to ``max_persons`` stick figures in front of a static background. A figure's action is
visible only in its motion over time (in any single frame every action looks alike): its limbs or its head
move, while its body stays in place, so that a face keeps to its keyframe's region over a clip. A figure
takes a new action for every keyframe (the second around it), so that its looks never tell what it does. Its identity
is visible only in its face (shape, colour and texture), and identities recur across videos and splits with
different clothes. Now and then a large object passes in front of the scene; the keyframes it hides are the
excluded timestamps. The generator writes what an AVA config expects (rawframes, train/val CSVs, excluded timestamps, label
map, dense proposals) plus the face CSV read by :class:`mmanon.datasets.AVAFaceDataset`.

Layout under ``out_dir``::

    rawframes/<video_id>/img_00001.jpg ...
    annotations/ava_{train,val}_v2.1.csv
    annotations/ava_{train,val}_excluded_timestamps_v2.1.csv
    annotations/ava_action_list_v2.1_for_activitynet_2018.pbtxt
    annotations/ava_dense_proposals_{train,val}.FAIR.recall_93.9.pkl
    annotations/ava_faces_{train,val}_v2.1.csv
    toy_ava.json   (the spec, the identities and the counts)
"""
import json
import math
import os
import os.path as osp
import pickle
from dataclasses import asdict, dataclass, replace
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

from .face_annotations import FaceRecord, dump_face_file

# Label ids start at 1, as in AVA. 'nod' moves only the head, so it lives inside the face region.
ACTIONS = ('stand', 'march', 'wave', 'clap', 'nod')
OCCLUSION_PROBABILITY = 0.1  # per keyframe
FACE_SHAPES = ('circle', 'square', 'diamond', 'triangle')
FACE_COLOURS = ((150, 190, 235), (80, 125, 175), (45, 65, 105))  # BGR skin tones: light, tan, dark
FACE_TEXTURES = ('plain', 'stripes', 'dots')
MAX_IDENTITIES = len(FACE_SHAPES) * len(FACE_COLOURS) * len(FACE_TEXTURES)
TIMESTAMP_START = 900  # AVADataset's default: frame 1 shows second 900
FIRST_KEYFRAME = 902
SPLITS = ('train', 'val')


@dataclass(frozen=True)
class ToyAVASpec:
    """What to generate.

    Args:
        num_train_videos (int): Videos in the train split. Defaults to 96.
        num_val_videos (int): Videos in the val split. Defaults to 24.
        keyframes_per_video (int): Annotated seconds per video, from second 902. Defaults to 3.
        fps (int): Frames per second of the rawframes. Defaults to 30.
        frame_size (tuple[int, int]): (height, width) of the frames. Defaults to (112, 160).
        num_identities (int): Distinct faces, at most ``MAX_IDENTITIES``; shared by both splits.
            Defaults to 24.
        max_persons (int): Persons per video are drawn from 1 to this. Defaults to 3.
        seed (int): Seed of everything random. Defaults to 0.
        version (str): AVA version in the file names. Defaults to 'v2.1'.
        jpeg_quality (int): Quality of the frame JPEGs. Defaults to 90.
    """
    num_train_videos: int = 96
    num_val_videos: int = 24
    keyframes_per_video: int = 3
    fps: int = 30
    frame_size: Tuple[int, int] = (112, 160)
    num_identities: int = 24
    max_persons: int = 3
    seed: int = 0
    version: str = 'v2.1'
    jpeg_quality: int = 90

    def __post_init__(self):
        if not 2 <= self.num_identities <= MAX_IDENTITIES:
            raise ValueError(f'num_identities must be in [2, {MAX_IDENTITIES}], got {self.num_identities}')
        if not 1 <= self.max_persons <= 3:
            raise ValueError(f'max_persons must be in [1, 3], got {self.max_persons}')
        if min(self.frame_size) < 48:
            raise ValueError(f'frame_size must be at least 48 pixels each way, got {self.frame_size}')
        if self.num_train_videos < 1 or self.num_val_videos < 1 or self.keyframes_per_video < 1:
            raise ValueError('num_train_videos, num_val_videos and keyframes_per_video must be positive')


PRESETS = {
    # The main job's benchmark (tools/run_toy.sh).
    'benchmark': ToyAVASpec(),
    # What the tests train on: a few seconds of tiny frames.
    'fixture': ToyAVASpec(num_train_videos=2, num_val_videos=1, keyframes_per_video=2, frame_size=(64, 80),
                          num_identities=4, max_persons=2),
}


def annotation_paths(out_dir: str, version: str = 'v2.1') -> Dict[str, str]:
    """The files an AVA config names, under ``out_dir``, keyed by config variable names."""
    anno = osp.join(out_dir, 'annotations')
    paths = dict(
        data_root=osp.join(out_dir, 'rawframes'),
        label_file=osp.join(anno, f'ava_action_list_{version}_for_activitynet_2018.pbtxt'))
    for split in SPLITS:
        paths[f'ann_file_{split}'] = osp.join(anno, f'ava_{split}_{version}.csv')
        paths[f'exclude_file_{split}'] = osp.join(anno, f'ava_{split}_excluded_timestamps_{version}.csv')
        paths[f'proposal_file_{split}'] = osp.join(anno, f'ava_dense_proposals_{split}.FAIR.recall_93.9.pkl')
        paths[f'face_file_{split}'] = osp.join(anno, f'ava_faces_{split}_{version}.csv')
    return paths


def identity_appearance(identity: int) -> Tuple[str, Tuple[int, int, int], str]:
    """The (shape, BGR colour, texture) of a face identity."""
    shape = FACE_SHAPES[identity % len(FACE_SHAPES)]
    colour = FACE_COLOURS[(identity // len(FACE_SHAPES)) % len(FACE_COLOURS)]
    texture = FACE_TEXTURES[identity // (len(FACE_SHAPES) * len(FACE_COLOURS))]
    return shape, colour, texture


@dataclass
class _Person:
    """One figure of one video: fixed traits, its action in each keyframe's second and their motion
    parameters."""
    entity_id: int
    identity: int
    actions: Tuple[int, ...]  # indices into ACTIONS, one per keyframe
    height: float
    x0: float
    feet_y: float
    clothes: Tuple[int, int, int]
    arm_angles: Tuple[float, float]  # degrees from straight down, left and right arm
    leg_spread: float  # degrees between each leg and the vertical
    head_dy: float
    period: float  # seconds, of every periodic motion
    phase: float


def _sample_person(rng: np.random.Generator, entity_id: int, identity: int, slot: Tuple[float, float],
                   height: float, frame_size: Tuple[int, int], num_keyframes: int) -> _Person:
    h = frame_size[0]
    lo, hi = slot
    return _Person(
        entity_id=entity_id,
        identity=identity,
        actions=tuple(int(a) for a in rng.integers(len(ACTIONS), size=num_keyframes)),
        height=float(height),
        x0=rng.uniform(lo, hi),
        feet_y=h - rng.uniform(0.06, 0.14) * h,
        clothes=tuple(int(c) for c in rng.integers(40, 230, size=3)),
        # Half of the figures hold their arms symmetrically, so that a clapper's pose is no giveaway.
        arm_angles=tuple(rng.uniform(15, 150, size=2)[[0, 0]] if rng.random() < 0.5 else rng.uniform(15, 150, size=2)),
        leg_spread=rng.uniform(6, 22),
        head_dy=rng.uniform(-0.025, 0.025) * height,
        period=rng.uniform(0.45, 0.6),
        phase=rng.uniform(0, 2 * math.pi))


def _keyframe_index(t: float, num_keyframes: int) -> int:
    """The keyframe whose second (from half a second before it to half a second after) holds ``t``."""
    return min(max(int(math.floor(t - (FIRST_KEYFRAME - TIMESTAMP_START) + 0.5)), 0), num_keyframes - 1)


def _pose(person: _Person, t: float) -> dict:
    """Where the parts of ``person`` are at ``t`` seconds after the video start.

    A still figure holds limb angles and a head offset drawn from the ranges that the moving ones sweep, so that
    no single frame tells the actions apart.
    """
    action = ACTIONS[person.actions[_keyframe_index(t, len(person.actions))]]
    wave = math.sin(2 * math.pi * t / person.period + person.phase)
    arms = list(person.arm_angles)
    legs = [person.leg_spread, person.leg_spread]
    head_dy = person.head_dy
    if action == 'march':
        legs = [14 + 16 * wave, 14 - 16 * wave]
        arms = [60 - 40 * wave, 60 + 40 * wave]
    elif action == 'wave':
        arms[1] = 95 + 55 * wave
    elif action == 'clap':
        arms = [100 + 45 * wave] * 2
    elif action == 'nod':
        head_dy = 0.06 * person.height * wave
    return dict(x=person.x0, feet_y=person.feet_y, arms=arms, legs=legs, head_dy=head_dy)


def _geometry(person: _Person, pose: dict) -> dict:
    """Pixel geometry of the figure: segments, torso and head boxes."""
    s = person.height
    x, feet_y = pose['x'], pose['feet_y']
    leg_len, torso_h, torso_w = 0.42 * s, 0.33 * s, 0.26 * s
    head_h, head_w = 0.21 * s, 0.18 * s
    hip_y = feet_y - leg_len
    shoulder_y = hip_y - torso_h
    head_cy = shoulder_y - 0.04 * s - head_h / 2 + pose['head_dy']
    legs = []
    for side, spread in zip((-1, 1), pose['legs']):
        a = math.radians(spread)
        legs.append(((x, hip_y), (x + side * leg_len * math.sin(a), hip_y + leg_len * math.cos(a))))
    arm_len = 0.34 * s
    arms = []
    for side, angle in zip((-1, 1), pose['arms']):
        a = math.radians(angle)
        start = (x + side * torso_w * 0.45, shoulder_y + 0.03 * s)
        arms.append((start, (start[0] + side * arm_len * math.sin(a), start[1] + arm_len * math.cos(a))))
    return dict(
        legs=legs,
        arms=arms,
        torso=(x - torso_w / 2, shoulder_y, x + torso_w / 2, hip_y),
        neck=((x, shoulder_y), (x, head_cy + head_h / 2)),
        head=(x - head_w / 2, head_cy - head_h / 2, x + head_w / 2, head_cy + head_h / 2),
        thickness=max(1, int(round(0.07 * s))))


def _person_box(geo: dict) -> np.ndarray:
    points = [p for seg in geo['legs'] + geo['arms'] for p in seg]
    xs = [p[0] for p in points] + [geo['torso'][0], geo['torso'][2], geo['head'][0], geo['head'][2]]
    ys = [p[1] for p in points] + [geo['head'][1], geo['torso'][3]]
    pad = geo['thickness']
    return np.array([min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad], dtype=np.float64)


def _pt(p) -> Tuple[int, int]:
    return int(round(p[0])), int(round(p[1]))


def _draw_face(img: np.ndarray, box, identity: int) -> None:
    shape, colour, texture = identity_appearance(identity)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    w, h = x2 - x1, y2 - y1
    mask = np.zeros(img.shape[:2], np.uint8)
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    if shape == 'circle':
        cv2.ellipse(mask, (cx, cy), (max(w // 2, 1), max(h // 2, 1)), 0, 0, 360, 255, -1)
    elif shape == 'square':
        cv2.rectangle(mask, (x1, y1), (x2, y2), 255, -1)
    elif shape == 'diamond':
        cv2.fillPoly(mask, [np.array([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], np.int32)], 255)
    else:  # triangle, apex down like a chin
        cv2.fillPoly(mask, [np.array([(x1, y1), (x2, y1), (cx, y2)], np.int32)], 255)
    face = np.empty_like(img)
    face[:] = colour
    if texture != 'plain':
        dark = (np.array(colour) * 0.55).astype(np.uint8)
        ys, xs = np.mgrid[0:img.shape[0], 0:img.shape[1]]
        pitch = max(3, h // 5)
        if texture == 'stripes':
            pattern = ((ys - y1) % pitch) < pitch // 2
        else:
            pattern = (((ys - y1) % pitch) < 2) & (((xs - x1) % pitch) < 2)
        face[pattern] = dark
    img[mask > 0] = face[mask > 0]
    eye_y = y1 + int(0.38 * h)
    for ex in (x1 + int(0.3 * w), x1 + int(0.7 * w)):
        cv2.circle(img, (ex, eye_y), max(1, w // 12), (20, 20, 20), -1)


def _draw_person(img: np.ndarray, person: _Person, geo: dict) -> None:
    t = geo['thickness']
    for a, b in geo['legs']:
        cv2.line(img, _pt(a), _pt(b), (60, 60, 60), t + 1)
    x1, y1, x2, y2 = geo['torso']
    cv2.rectangle(img, _pt((x1, y1)), _pt((x2, y2)), person.clothes, -1)
    for a, b in geo['arms']:
        cv2.line(img, _pt(a), _pt(b), person.clothes, t)
    cv2.line(img, _pt(geo['neck'][0]), _pt(geo['neck'][1]), (90, 110, 140), t)
    _draw_face(img, geo['head'], person.identity)


def _draw_occluder(img: np.ndarray, colour: Tuple[int, int, int], t: float) -> None:
    """A large object passing in front of the scene (it slides a little, so that it is not background)."""
    h, w = img.shape[:2]
    x = int(0.1 * w + 0.05 * w * math.sin(4 * t))
    img[:, x:x + int(0.8 * w)] = colour


def _background(rng: np.random.Generator, frame_size: Tuple[int, int]) -> np.ndarray:
    h, w = frame_size
    top, bottom = rng.integers(60, 200, size=(2, 3))
    ramp = np.linspace(0, 1, h)[:, None, None]
    img = (top * (1 - ramp) + bottom * ramp).repeat(w, axis=1)
    for _ in range(int(rng.integers(2, 5))):  # static furniture
        bx, by = int(rng.integers(0, w - 8)), int(rng.integers(0, h // 2))
        bw, bh = int(rng.integers(8, w // 3)), int(rng.integers(6, h // 3))
        img[by:by + bh, bx:bx + bw] = rng.integers(30, 220, size=3)
    img += rng.normal(0, 5, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _norm_box(box: np.ndarray, frame_size: Tuple[int, int]) -> np.ndarray:
    h, w = frame_size
    return np.clip(box / np.array([w, h, w, h]), 0, 1)


def _fmt(values) -> str:
    return ','.join(f'{v:.3f}' for v in values)


def _generate_video(spec: ToyAVASpec, split: str, index: int, frame_dir: Optional[str]) -> dict:
    """Render one video (when ``frame_dir`` is given) and return its annotation rows."""
    rng = np.random.default_rng([spec.seed, SPLITS.index(split), index])
    h, w = spec.frame_size
    video_id = f'toy{split}{index:04d}'
    num_persons = int(rng.integers(1, spec.max_persons + 1))
    heights = h * rng.uniform(0.5, 0.6, size=num_persons)
    # Each figure keeps its centre inside its own slot of the width, torso clear of the slot's edges (arms
    # may reach into the neighbour's, as people overlap in AVA).
    slot_w = w / num_persons
    slots = [(i * slot_w + 0.2 * s, (i + 1) * slot_w - 0.2 * s) for i, s in enumerate(heights)]
    identities = rng.choice(spec.num_identities, size=num_persons, replace=False)
    persons = [
        _sample_person(rng, i, int(identities[i]), slots[i], heights[i], spec.frame_size, spec.keyframes_per_video)
        for i in range(num_persons)
    ]
    background = _background(rng, spec.frame_size)
    jitter = rng.normal(0, 1.0, size=(spec.keyframes_per_video, num_persons, 4))
    scores = rng.uniform(0.9, 1.0, size=(spec.keyframes_per_video, num_persons))
    keyframe_times = FIRST_KEYFRAME - TIMESTAMP_START + np.arange(spec.keyframes_per_video)
    occluded = set(keyframe_times[rng.random(spec.keyframes_per_video) < OCCLUSION_PROBABILITY].tolist())
    occluder = tuple(int(c) for c in rng.integers(60, 200, size=3))

    num_frames = (FIRST_KEYFRAME - TIMESTAMP_START + spec.keyframes_per_video + 1) * spec.fps
    if frame_dir is not None:
        os.makedirs(frame_dir, exist_ok=True)
        for k in range(num_frames):
            t = k / spec.fps
            img = background.copy()
            for person in persons:
                _draw_person(img, person, _geometry(person, _pose(person, t)))
            if any(abs(t - hidden) <= 0.5 for hidden in occluded):
                _draw_occluder(img, occluder, t)
            cv2.imwrite(osp.join(frame_dir, f'img_{k + 1:05d}.jpg'), img,
                        [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg_quality])

    rows = dict(ann=[], faces=[], excluded=[], proposals={})
    for k in range(spec.keyframes_per_video):
        timestamp = FIRST_KEYFRAME + k
        t = timestamp - TIMESTAMP_START
        boxes = []
        for person in persons:
            geo = _geometry(person, _pose(person, t))
            box = _norm_box(_person_box(geo), spec.frame_size)
            boxes.append(box)
            action = person.actions[k] + 1
            rows['ann'].append(f'{video_id},{timestamp},{_fmt(box)},{action},{person.entity_id}')
            face = _norm_box(np.array(geo['head']), spec.frame_size)
            rows['faces'].append(
                FaceRecord(video_id, timestamp, tuple(face.tolist()), person.identity, person.entity_id))
        if t in occluded:
            rows['excluded'].append(f'{video_id},{timestamp}')
        proposals = np.clip(np.stack(boxes) + jitter[k] / np.array([w, h, w, h]), 0, 1)
        rows['proposals'][f'{video_id},{timestamp:04d}'] = np.concatenate(
            [proposals, scores[k][:, None]], axis=1).astype(np.float32)
    rows['video_id'] = video_id
    return rows


def generate_toy_ava(out_dir: str,
                     spec: ToyAVASpec = PRESETS['benchmark'],
                     render: bool = True,
                     progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, str]:
    """Write a toy AVA benchmark into ``out_dir``.

    Args:
        out_dir (str): Target folder; existing files are overwritten.
        spec (ToyAVASpec): What to generate. Defaults to ``PRESETS['benchmark']``.
        render (bool): Whether to write the frames; annotations alone are cheap and identical either way.
            Defaults to True.
        progress (callable, optional): Called as ``progress(done, total)`` after each video.

    Returns:
        dict: The paths of :func:`annotation_paths`.
    """
    paths = annotation_paths(out_dir, spec.version)
    os.makedirs(osp.dirname(paths['label_file']), exist_ok=True)
    total = spec.num_train_videos + spec.num_val_videos
    done = 0
    counts = {}
    for split, num_videos in zip(SPLITS, (spec.num_train_videos, spec.num_val_videos)):
        ann, faces, excluded, proposals = [], [], [], {}
        for index in range(num_videos):
            video_id = f'toy{split}{index:04d}'
            frame_dir = osp.join(paths['data_root'], video_id) if render else None
            rows = _generate_video(spec, split, index, frame_dir)
            ann += rows['ann']
            faces += rows['faces']
            excluded += rows['excluded']
            proposals.update(rows['proposals'])
            done += 1
            if progress is not None:
                progress(done, total)
        _write_lines(paths[f'ann_file_{split}'], ann)
        dump_face_file(paths[f'face_file_{split}'], faces)
        _write_lines(paths[f'exclude_file_{split}'], excluded)
        with open(paths[f'proposal_file_{split}'], 'wb') as f:
            pickle.dump(proposals, f, protocol=4)
        counts[split] = dict(videos=num_videos, keyframes=len(proposals), persons=len(ann),
                             excluded_keyframes=len(excluded))
    _write_lines(paths['label_file'], [
        f'item {{\n  name: "{name}"\n  id: {i + 1}\n}}' for i, name in enumerate(ACTIONS)])
    meta = dict(spec=asdict(spec), actions=list(ACTIONS), counts=counts,
                identities={i: dict(zip(('shape', 'colour_bgr', 'texture'), identity_appearance(i)))
                            for i in range(spec.num_identities)})
    with open(osp.join(out_dir, 'toy_ava.json'), 'w', encoding='utf-8') as f:
        json.dump(meta, f, indent=1)
    return paths


def _write_lines(path: str, lines: List[str]) -> None:
    with open(path, 'w', encoding='utf-8', newline='\n') as f:
        f.write(''.join(line + '\n' for line in lines))


def spec_from_preset(preset: str, **overrides) -> ToyAVASpec:
    """A preset spec with some fields replaced, e.g. ``spec_from_preset('benchmark', seed=1)``."""
    if preset not in PRESETS:
        raise KeyError(f'unknown preset {preset!r}; choose from {sorted(PRESETS)}')
    return replace(PRESETS[preset], **overrides)
