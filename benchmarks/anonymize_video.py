"""Frames per second of ``tools/anonymize_video.py`` for each method, detection and tracking included.

Generates a clip of moving synthetic faces that OpenCV's Haar cascade detects (skin-toned textured ovals with
eyes, brows, nose and mouth), runs :func:`mmanon.apis.anonymize_video` on it once per method, and prints a
table with the command line and the machine. The fps of a method covers the whole loop over the frames
(decoding, detection, tracking, anonymization, mp4v encoding) and the check of the written file, not the
loading of the models; the detector alone is measured too, to show where the time goes. ``learned`` uses the
architecture of ``configs/_base_/anonymizers/learned.py`` with freshly initialised weights unless
``--checkpoint`` is given: its speed does not depend on the weights.

Examples (the first detects at full resolution in every frame, as the tool does by default; the second uses
the speed settings ``--detector-options resize=0.5 --detect-every 3`` of the tool)::

    python benchmarks/anonymize_video.py --threads 2
    python benchmarks/anonymize_video.py --threads 2 --haar-resize 0.5 --detect-every 3

The numbers are wall-clock: on a machine shared with other work they are lower than on idle cores, which is
why the load average is printed with them.
"""
import os

# As tools/anonymize_video.py does (see there why), so that the numbers are the tool's.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import argparse  # noqa: E402
import os.path as osp  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Iterator, List, Tuple  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402

import mmanon  # noqa: E402
from mmanon.apis import anonymize_video, build_face_detector  # noqa: E402
from mmanon.apis.anonymize_video import CONFIG_DIR, METHODS  # noqa: E402
from mmanon.registry import MODELS, build_in_scope  # noqa: E402
from mmanon.utils import add_checkpoint_arguments, apply_checkpoint_arguments  # noqa: E402

TARGETS = dict(handcrafted=60.0, learned=30.0)
SKIN_BGR = (150, 180, 220)


def draw_face(img: np.ndarray, box, rng: np.random.Generator) -> None:
    """Draw a frontal cartoon face filling ``box`` (x1, y1, x2, y2) of a BGR image, in place.

    The skin is textured with noise so that every anonymizer (a blur too) visibly changes it.

    Args:
        img (np.ndarray): (H, W, 3) uint8 BGR image.
        box (Sequence[float]): The face's bounding box in pixels.
        rng (np.random.Generator): Source of the skin texture.
    """
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1

    def point(fx, fy):
        return int(round(x1 + fx * w)), int(round(y1 + fy * h))

    def axes(fx, fy):
        return max(1, int(round(fx * w))), max(1, int(round(fy * h)))

    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.ellipse(mask, point(0.5, 0.5), axes(0.5, 0.5), 0, 0, 360, 255, -1)
    inside = mask > 0
    skin = np.array(SKIN_BGR, np.float32) + rng.normal(0, 12, (int(inside.sum()), 3))
    img[inside] = np.clip(skin, 0, 255).astype(np.uint8)
    thickness = max(1, int(w / 25))
    for fx in (0.3, 0.7):
        cv2.ellipse(img, point(fx, 0.4), axes(0.11, 0.04), 0, 0, 360, (40, 40, 40), -1)
        cv2.line(img, point(fx - 0.13, 0.32), point(fx + 0.13, 0.32), (50, 50, 60), thickness)
    cv2.line(img, point(0.5, 0.42), point(0.46, 0.6), (110, 140, 180), thickness)
    cv2.ellipse(img, point(0.5, 0.72), axes(0.17, 0.04), 0, 0, 360, (60, 60, 130), -1)


def synthetic_frames(num_frames: int,
                     width: int,
                     height: int,
                     num_faces: int = 2,
                     seed: int = 0) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Frames of faces that bounce around a gradient background.

    Args:
        num_frames (int): Frames to make.
        width (int): Frame width.
        height (int): Frame height; each face is 0.3 of it tall.
        num_faces (int): Faces in every frame. Defaults to 2.
        seed (int): Seed of the start positions, velocities and textures. Defaults to 0.

    Yields:
        tuple[np.ndarray, np.ndarray]: The (H, W, 3) uint8 BGR frame and its (num_faces, 4) true face boxes
        (x1, y1, x2, y2) in pixels.
    """
    rng = np.random.default_rng(seed)
    face_h = 0.3 * height
    size = np.array([0.8 * face_h, face_h])
    room = np.array([width, height]) - size
    pos = rng.uniform(0.1, 0.9, (num_faces, 2)) * room
    vel = rng.uniform(1.0, 2.5, (num_faces, 2)) * rng.choice([-1, 1], (num_faces, 2)) * height / 180
    background = np.empty((height, width, 3), np.uint8)
    background[:] = np.linspace(60, 160, width)[None, :, None].astype(np.uint8)
    for _ in range(num_frames):
        frame = background.copy()
        boxes = np.concatenate([pos, pos + size], axis=1).round()
        for box in boxes:
            draw_face(frame, box, rng)
        yield frame, boxes
        pos = pos + vel
        bounce = (pos < 0) | (pos > room)
        vel[bounce] *= -1
        pos = np.clip(pos, 0, room)


def write_synthetic_clip(path: str, num_frames: int, width: int, height: int, num_faces: int = 2,
                         fps: float = 30., seed: int = 0) -> List[np.ndarray]:
    """Write the frames of :func:`synthetic_frames` to a ``.mp4`` (mp4v) or ``.avi`` (MJPG) video.

    Args:
        path (str): The video file.
        num_frames (int): Frames to write.
        width (int): Frame width.
        height (int): Frame height.
        num_faces (int): Faces in every frame. Defaults to 2.
        fps (float): Frame rate. Defaults to 30.
        seed (int): Seed of :func:`synthetic_frames`. Defaults to 0.

    Returns:
        list[np.ndarray]: Per frame, the true face boxes.
    """
    fourcc = 'MJPG' if path.lower().endswith('.avi') else 'mp4v'
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f'cannot write {path}')
    all_boxes = []
    for frame, boxes in synthetic_frames(num_frames, width, height, num_faces, seed):
        writer.write(frame)
        all_boxes.append(boxes)
    writer.release()
    return all_boxes


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Measure frames per second of video anonymization for each '
                                     'method, detection, tracking, decoding and encoding included.')
    parser.add_argument('--methods', nargs='+', choices=METHODS, default=list(METHODS),
                        help='methods to measure (default: all)')
    parser.add_argument('--frames', type=int, default=300, help='frames of the generated clip (default: 300)')
    parser.add_argument('--width', type=int, default=640, help='frame width (default: 640)')
    parser.add_argument('--height', type=int, default=360, help='frame height (default: 360)')
    parser.add_argument('--faces', type=int, default=2, help='faces in every frame (default: 2)')
    parser.add_argument('--threads', type=int, default=2,
                        help='CPU threads for OpenCV and PyTorch (default: 2, the target machine\'s cores)')
    parser.add_argument('--checkpoint', help='a trained checkpoint for "learned" (default: the learned base '
                        'config\'s architecture with freshly initialised weights)')
    parser.add_argument('--detect-every', type=int, default=1,
                        help='run the detector on every n-th frame only (default: 1)')
    parser.add_argument('--haar-resize', type=float, default=1.0,
                        help='factor frames are resized by before Haar detection (default: 1.0)')
    parser.add_argument('--device', default='cpu', help='device of the anonymizer (default: cpu)')
    add_checkpoint_arguments(parser, missing_keys=False)
    return parser.parse_args(argv)


def initial_learned_checkpoint(path: str) -> None:
    """Save a checkpoint holding the learned base config's anonymizer with freshly initialised weights."""
    cfg_path = osp.join(CONFIG_DIR, 'learned.py')
    anonymizer_cfg = Config.fromfile(cfg_path)['anonymizer']
    anonymizer = build_in_scope(MODELS, anonymizer_cfg)
    cfg = Config(dict(model=dict(data_preprocessor=dict(anonymizer=anonymizer_cfg.to_dict()))))
    state = {f'data_preprocessor.anonymizer.{k}': v for k, v in anonymizer.state_dict().items()}
    torch.save(dict(state_dict=state, meta=dict(cfg=cfg.pretty_text)), path)


def machine_info() -> str:
    """CPU, usable cores, load and versions, for the table's header."""
    cpu = platform.processor() or 'unknown CPU'
    if osp.exists('/proc/cpuinfo'):
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
        cpu = names[0] if names else cpu
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    load = ', '.join(f'{v:.1f}' for v in os.getloadavg()) if hasattr(os, 'getloadavg') else 'unknown'
    return (f'{cpu}; {cores} usable cores; load average {load}; {platform.system()} {platform.release()}; Python '
            f'{platform.python_version()}; torch {torch.__version__}; OpenCV {cv2.__version__}; '
            f'mmanon {mmanon.__version__}')


def main():
    args = parse_args()
    apply_checkpoint_arguments(args)
    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    print(f'command: {" ".join([osp.basename(sys.executable)] + sys.argv)}')
    print(f'machine: {machine_info()}')
    print(f'threads: {args.threads} (OpenCV and PyTorch); OMP_WAIT_POLICY={os.environ["OMP_WAIT_POLICY"]}')
    detector_options = dict(resize=args.haar_resize)
    with tempfile.TemporaryDirectory() as tmp:
        clip = osp.join(tmp, 'clip.mp4')
        boxes = write_synthetic_clip(clip, args.frames, args.width, args.height, args.faces)
        print(f'clip: {args.frames} frames of {args.width}x{args.height}, {args.faces} moving synthetic faces; '
              f'Haar detector (resize={args.haar_resize}), detector run on every {args.detect_every} frame(s)')

        detector = build_face_detector('haar', **detector_options)
        capture = cv2.VideoCapture(clip)
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
        capture.release()
        start = time.perf_counter()
        found = sum(len(detector(frame)) for frame in frames[::args.detect_every])
        detect_fps = len(frames) / (time.perf_counter() - start)
        recall = found / (len(frames[::args.detect_every]) * len(boxes[0]))

        checkpoint = args.checkpoint
        if 'learned' in args.methods and checkpoint is None:
            checkpoint = osp.join(tmp, 'learned_initial.pth')
            initial_learned_checkpoint(checkpoint)
        rows = []
        for method in args.methods:
            summary = anonymize_video(
                clip, osp.join(tmp, f'{method}.mp4'), method=method,
                checkpoint=checkpoint if method == 'learned' else None, detector='haar',
                detector_options=detector_options, device=args.device, detect_every=args.detect_every,
                progress=False)
            target = TARGETS['learned' if method == 'learned' else 'handcrafted']
            rows.append((method, summary['processing_fps'], summary['faces_detected'] / summary['frames'],
                         summary['anonymized_frames'], target))

    print(f'\ndetector alone: {detect_fps:.1f} frames of the clip per second ({found} detections, {recall:.0%} '
          f'of the {len(boxes[0])} faces in the frames it ran on)')
    print('\n| method | fps | detections / frame | anonymized frames | target fps | met |')
    print('|---|---:|---:|---:|---:|---|')
    for method, fps, per_frame, anonymized, target in rows:
        print(f'| {method} | {fps:.1f} | {per_frame:.2f} | {anonymized}/{args.frames} | {target:.0f} | '
              f'{"yes" if fps >= target else "no"} |')


if __name__ == '__main__':
    main()
