"""Frames per second of ``tools/anonymize_video.py`` beside ``deface`` on the same inputs, in the same run.

Inputs, each 640x360 by default:

- ``synthetic``: a generated clip of moving cartoon faces (known boxes);
- ``photo``: a real face, scikit-image's bundled astronaut portrait (NASA, public domain), moving across the
  frame (known boxes);
- every ``--videos`` file (e.g. ``data/real_faces/videos/short_hamilton_clip.mp4``, 640x360, see the README),
  scaled to ``--width`` x ``--height`` first when it has another size.

For each input the script runs :func:`mmanon.apis.anonymize_video` per method with the tool's default settings
(or ``--options``), and deface's own video function (``deface.deface.video_detect``: CenterFace with
onnxruntime at full resolution, threshold 0.2, blurred ellipses, libx264 through FFmpeg) when deface is
installed. The fps cover the whole loop over the frames: decoding, detection, tracking, anonymization and
encoding (and, for mmanon, the check of the written file), not the loading of the models. ``coverage`` is the
share of known face boxes (synthetic and photo inputs) of which at least 90% was anonymized, over all frames.
``learned`` uses the architecture of ``configs/_base_/anonymizers/learned.py`` with freshly initialised weights
unless ``--checkpoint`` is given: its speed does not depend on the weights.

Example::

    python benchmarks/anonymize_video.py --videos data/real_faces/videos/short_hamilton_clip.mp4

The numbers are wall-clock: on a machine shared with other work they are lower than on idle cores, which is
why the load average is printed with them; the ratio to deface in the same run is the steadier figure.
"""
import os

# As tools/anonymize_video.py does (see there why), so that the numbers are the tool's.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import argparse  # noqa: E402
import contextlib  # noqa: E402
import os.path as osp  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Iterator, List, Optional, Tuple  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402

import mmanon  # noqa: E402
from mmanon.apis import anonymize_video  # noqa: E402
from mmanon.apis.anonymize_video import (CONFIG_DIR, COVERED_FRACTION, METHODS, covered_fraction,  # noqa: E402
                                         regions_mask)
from mmanon.registry import MODELS, build_in_scope  # noqa: E402
from mmanon.utils import add_checkpoint_arguments, apply_checkpoint_arguments  # noqa: E402

TARGET_FPS = 60.0
TARGET_RATIO = 3.0
SKIN_BGR = (150, 180, 220)
# dlib's CNN detector's box of the astronaut's face in scikit-image's 512x512 portrait.
ASTRONAUT_FACE = np.array([168, 69, 264, 165], np.float64)


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


def photo_frames(num_frames: int, width: int, height: int, face_height: float = 0.3,
                 seed: int = 0) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Frames of a real portrait (scikit-image's astronaut) that drifts and bounces over a gradient background.

    Args:
        num_frames (int): Frames to make.
        width (int): Frame width.
        height (int): Frame height.
        face_height (float): The face's height as a fraction of the frame's. Defaults to 0.3.
        seed (int): Seed of the start position and velocity. Defaults to 0.

    Yields:
        tuple[np.ndarray, np.ndarray]: The (H, W, 3) uint8 BGR frame and its (1, 4) face box in pixels.
    """
    from skimage.data import astronaut
    scale = face_height * height / (ASTRONAUT_FACE[3] - ASTRONAUT_FACE[1])
    portrait = cv2.resize(astronaut()[..., ::-1], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    # The head and shoulders: a square around the face, 2.5 faces wide.
    side = int(2.5 * (ASTRONAUT_FACE[3] - ASTRONAUT_FACE[1]) * scale)
    centre = (ASTRONAUT_FACE[:2] + ASTRONAUT_FACE[2:]) / 2 * scale
    x0, y0 = np.clip((centre - side / 2).astype(int), 0, None)
    patch = portrait[y0:y0 + side, x0:x0 + side]
    face = ASTRONAUT_FACE * scale - np.array([x0, y0, x0, y0])
    rng = np.random.default_rng(seed)
    room = np.array([width - patch.shape[1], height - patch.shape[0]], np.float64)
    pos = rng.uniform(0.1, 0.9, 2) * room
    vel = rng.uniform(1.5, 3.0, 2) * rng.choice([-1, 1], 2) * height / 180
    background = np.empty((height, width, 3), np.uint8)
    background[:] = np.linspace(60, 160, width)[None, :, None].astype(np.uint8)
    for _ in range(num_frames):
        frame = background.copy()
        x, y = pos.round().astype(int)
        frame[y:y + patch.shape[0], x:x + patch.shape[1]] = patch
        yield frame, (face + np.array([x, y, x, y]))[None]
        pos = pos + vel
        bounce = (pos < 0) | (pos > room)
        vel[bounce] *= -1
        pos = np.clip(pos, 0, room)


def write_clip(path: str, frames: Iterator[Tuple[np.ndarray, np.ndarray]], fps: float = 30.) -> List[np.ndarray]:
    """Write ``(frame, boxes)`` pairs as an H.264 video and return the boxes, per frame."""
    import av
    boxes = []
    with av.open(path, 'w') as container:
        stream = None
        for frame, frame_boxes in frames:
            if stream is None:
                stream = container.add_stream('libx264', rate=int(fps), options=dict(crf='18'))
                stream.width, stream.height, stream.pix_fmt = frame.shape[1], frame.shape[0], 'yuv420p'
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='bgr24')))
            boxes.append(frame_boxes)
        container.mux(stream.encode(None))
    return boxes


def scaled_copy(path: str, out: str, width: int, height: int) -> str:
    """The video, scaled to ``width`` x ``height`` (the path itself when it has that size already)."""
    import av
    with av.open(path) as container:
        stream = container.streams.video[0]
        if (stream.codec_context.width, stream.codec_context.height) == (width, height):
            return path
        rate = stream.average_rate or 30
        frames = ((cv2.resize(f.to_ndarray(format='bgr24'), (width, height), interpolation=cv2.INTER_AREA), None)
                  for f in container.decode(stream))
        write_clip(out, frames, fps=float(rate))
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Frames per second of video anonymization (decoding, detection, '
                                     'tracking, anonymization, encoding) for each method, beside deface on the '
                                     'same inputs in the same run.')
    parser.add_argument('--videos', nargs='*', default=[],
                        help='real videos to measure on as well (scaled to --width x --height when needed)')
    parser.add_argument('--methods', nargs='+', choices=METHODS, default=['blur', 'pixelate', 'mask'],
                        help='methods to measure (default: blur pixelate mask)')
    parser.add_argument('--options', nargs='+', action=DictAction, default={},
                        help='keyword arguments of mmanon.apis.anonymize_video, e.g. detect_every=1 '
                        'detector_options="dict(input_scale=1.0)" (default: the tool\'s defaults)')
    parser.add_argument('--frames', type=int, default=300, help='frames of the generated clips (default: 300)')
    parser.add_argument('--width', type=int, default=640, help='frame width (default: 640)')
    parser.add_argument('--height', type=int, default=360, help='frame height (default: 360)')
    parser.add_argument('--threads', type=int, default=2,
                        help='CPU threads for OpenCV and PyTorch (default: 2, the target machine\'s cores)')
    parser.add_argument('--no-deface', action='store_true', help='do not run deface even when it is installed')
    parser.add_argument('--checkpoint', help='a trained checkpoint for "learned" (default: the learned base '
                        'config\'s architecture with freshly initialised weights)')
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


def run_mmanon(path: str, out: str, method: str, options: dict,
               boxes: Optional[List[np.ndarray]]) -> Tuple[float, Optional[float], dict]:
    """fps of the tool on a video, and the share of known face boxes that were covered (None without boxes)."""
    height, width = _video_size(path)
    covered = []

    def check(info):
        mask = np.ones((height, width), bool) if info['blurred'] else regions_mask(info['regions'], height, width)
        covered.extend(covered_fraction(boxes[info['index']], mask) >= COVERED_FRACTION)

    summary = anonymize_video(path, out, method=method, progress=False,
                              frame_callback=None if boxes is None else check, **options)
    return summary['processing_fps'], (None if boxes is None else float(np.mean(covered))), summary


def run_deface(path: str, out: str) -> Optional[float]:
    """fps of deface's own video loop with its defaults, or None when deface is not installed."""
    try:
        from deface.centerface import CenterFace
        from deface.deface import video_detect
    except ImportError:
        return None
    with open(os.devnull, 'w') as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
        centerface = CenterFace(in_shape=None, backend='auto')
        start = time.perf_counter()
        video_detect(ipath=path, opath=out, centerface=centerface, threshold=0.2, enable_preview=False, cam=False,
                     nested=False, replacewith='blur', mask_scale=1.3, ellipse=True, draw_scores=False,
                     ffmpeg_config=dict(codec='libx264'), keep_audio=False)
        seconds = time.perf_counter() - start
    return _frame_count(out) / seconds


def _video_size(path: str) -> Tuple[int, int]:
    import av
    with av.open(path) as container:
        context = container.streams.video[0].codec_context
        return context.height, context.width


def _frame_count(path: str) -> int:
    import av
    with av.open(path) as container:
        return sum(1 for _ in container.decode(video=0))


def worst_track(summary: dict) -> str:
    """The tool's temporal leakage: of its worst track, the frames where the detector saw the face but no region
    covered it, over the frames where it was seen."""
    worst = summary.get('worst_track')
    return 'n/a' if worst is None else f'{worst["uncovered"]}/{worst["seen"]}'


def main(argv=None):
    args = parse_args(argv)
    apply_checkpoint_arguments(args)
    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    print(f'command: {" ".join([osp.basename(sys.executable)] + sys.argv)}')
    print(f'machine: {machine_info()}')
    options = args.options or "the tool's defaults"
    print(f'threads: {args.threads} (OpenCV and PyTorch); OMP_WAIT_POLICY={os.environ["OMP_WAIT_POLICY"]}; '
          f'options: {options}')
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        inputs = [('synthetic', osp.join(tmp, 'synthetic.mp4'),
                   synthetic_frames(args.frames, args.width, args.height, num_faces=2)),
                  ('photo', osp.join(tmp, 'photo.mp4'), photo_frames(args.frames, args.width, args.height))]
        clips = [(name, path, write_clip(path, frames)) for name, path, frames in inputs]
        for i, video in enumerate(args.videos):
            clips.append((osp.basename(video), scaled_copy(video, osp.join(tmp, f'video{i}.mp4'), args.width,
                                                           args.height), None))
        checkpoint = args.checkpoint
        if 'learned' in args.methods and checkpoint is None:
            checkpoint = osp.join(tmp, 'learned_initial.pth')
            initial_learned_checkpoint(checkpoint)
        for name, path, boxes in clips:
            deface_fps = None if args.no_deface else run_deface(path, osp.join(tmp, 'deface.mp4'))
            for method in args.methods:
                options = dict(args.options, device=args.device)
                if method == 'learned':
                    options['checkpoint'] = checkpoint
                fps, coverage, summary = run_mmanon(path, osp.join(tmp, 'out.mp4'), method, options, boxes)
                rows.append((name, method, fps, deface_fps, coverage, summary))
    print(f'\nmachine after the run: load average {", ".join(f"{v:.1f}" for v in os.getloadavg())}')
    print('\n| input | method | mmanon fps | deface fps | ratio | coverage | tracks | worst track uncovered/seen | '
          f'targets met (>= {TARGET_FPS:.0f} fps, >= {TARGET_RATIO:.0f}x deface) |')
    print('|---|---|---:|---:|---:|---:|---:|---:|---|')
    for name, method, fps, deface_fps, coverage, summary in rows:
        ratio = fps / deface_fps if deface_fps else None
        met = fps >= TARGET_FPS and (ratio is None or ratio >= TARGET_RATIO)
        print(f'| {name} | {method} | {fps:.1f} | {"n/a" if deface_fps is None else f"{deface_fps:.1f}"} | '
              f'{"n/a" if ratio is None else f"{ratio:.2f}x"} | '
              f'{"n/a" if coverage is None else f"{coverage:.1%}"} | {summary["tracks"]} | {worst_track(summary)} | '
              f'{"yes" if met else "no"} |')


if __name__ == '__main__':
    main()
