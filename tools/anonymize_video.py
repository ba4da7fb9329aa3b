"""Anonymize the faces of a real video or folder of frames; see :func:`mmanon.apis.anonymize_video`.

Examples::

    python tools/anonymize_video.py in.mp4 out.mp4 --method blur
    python tools/anonymize_video.py in.mp4 out.mp4 --method learned --checkpoint work_dirs/x/iter_1000.pth
    python tools/anonymize_video.py frames/ out_frames/ --fallback head --fps 25
"""
import os

# PyTorch's OpenMP threads spin for a while after each operation; on a few cores they then starve the OpenCV
# threads that decode, detect and encode between the small anonymizer calls of every frame (2 to 7 times
# slower on 2 cores). Sleeping threads avoid that. It must be set before torch loads; an explicit value wins.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import argparse  # noqa: E402
import pickle  # noqa: E402
import sys  # noqa: E402

from mmengine.config import DictAction  # noqa: E402

from mmanon.apis import anonymize_video  # noqa: E402
from mmanon.apis.anonymize_video import FALLBACKS, METHODS  # noqa: E402
from mmanon.utils import add_checkpoint_arguments, apply_checkpoint_arguments  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Detect, track and anonymize every face of a video (or a folder of frames). The output '
        'keeps the resolution, frame count and frame rate; it is written to a temporary file and renamed '
        'only once complete, so a failure leaves no output.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('input', help='a video file (anything OpenCV reads), or a folder of frames (image '
                        'files, taken in sorted name order)')
    parser.add_argument('output', help='a .mp4 (mp4v) or .avi (MJPG) video; for a folder input also a new or '
                        'empty folder, which receives the frames under their input names')
    parser.add_argument('--method', choices=METHODS, default='blur',
                        help='blur, pixelate, mask (solid) and noise use configs/_base_/anonymizers/; learned '
                        'needs --checkpoint')
    parser.add_argument('--checkpoint', help='checkpoint of tools/train.py with a learned anonymizer '
                        '(--method learned)')
    parser.add_argument('--detector', default='haar',
                        help='face detector: haar (OpenCV), dlib (needs pip install -e .[attack]) or '
                        'onnx:FILE (your own ONNX model; see mmanon.apis.OnnxFaceDetector for its contract)')
    parser.add_argument('--detector-options', nargs='+', action=DictAction, default={},
                        help='keyword arguments of the detector, e.g. resize=0.5 scale_factor=1.2 for haar, '
                        'upsample=1 for dlib, input_size="(320,320)" score_threshold=0.6 for onnx')
    parser.add_argument('--device', default='cpu', help='where the anonymizer runs: cpu or cuda')
    parser.add_argument('--fallback', choices=FALLBACKS,
                        help='when a track has expired (lost for more than --max-age frames), keep covering '
                        'the face for --fallback-frames more: head anonymizes its last region enlarged '
                        '--fallback-scale times more, frame blurs the whole frame (default: no fallback)')
    parser.add_argument('--fallback-frames', type=int, default=30, help='frames a fallback lasts')
    parser.add_argument('--fallback-scale', type=float, default=1.5,
                        help='extra enlargement of a head fallback region')
    parser.add_argument('--max-age', type=int, default=15,
                        help='frames a face the detector lost stays anonymized at its tracked box')
    parser.add_argument('--iou-threshold', type=float, default=0.3,
                        help='least IoU for a detection to continue a track')
    parser.add_argument('--smoothing', type=float, default=0.5,
                        help='weight of a track\'s prediction in its moving-average box, in [0, 1); 0 follows '
                        'the detector exactly')
    parser.add_argument('--no-extrapolate', action='store_true',
                        help='keep lost tracks where they were last seen instead of moving them on by their '
                        'velocity')
    parser.add_argument('--detect-every', type=int, default=1,
                        help='run the detector on every n-th frame only (tracks move on in between): faster, '
                        'but a face that appears is missed for up to n-1 frames')
    parser.add_argument('--margin', type=float,
                        help='enlargement of face boxes (default: the checkpoint\'s, else 2.0)')
    parser.add_argument('--feather', type=float,
                        help='blending ramp at region borders, a fraction of the region size (default: the '
                        'checkpoint\'s, else 0.2)')
    parser.add_argument('--fps', type=float,
                        help='frame rate of a folder input (default: 30); for a video input only used when '
                        'the file declares none')
    parser.add_argument('--no-progress', action='store_true', help='do not show the progress bar')
    # A learned anonymizer is always loaded in full: parts left random could leave faces recognisable.
    add_checkpoint_arguments(parser, missing_keys=False)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    apply_checkpoint_arguments(args)
    try:
        summary = anonymize_video(
            args.input,
            args.output,
            method=args.method,
            checkpoint=args.checkpoint,
            detector=args.detector,
            detector_options=args.detector_options,
            device=args.device,
            fallback=args.fallback,
            fallback_frames=args.fallback_frames,
            fallback_scale=args.fallback_scale,
            max_age=args.max_age,
            iou_threshold=args.iou_threshold,
            smoothing=args.smoothing,
            extrapolate=not args.no_extrapolate,
            detect_every=args.detect_every,
            margin=args.margin,
            feather=args.feather,
            fps=args.fps,
            progress=not args.no_progress)
    except (OSError, ValueError, ImportError, pickle.UnpicklingError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f'interrupted; no output was written to {args.output}', file=sys.stderr)
        return 130
    print(f'wrote {summary["output"]}: {summary["frames"]} frames of {summary["width"]}x{summary["height"]} at '
          f'{summary["fps"]:g} fps ({summary["method"]})')
    print(f'faces detected: {summary["faces_detected"]}, tracks: {summary["tracks"]}, frames anonymized: '
          f'{summary["anonymized_frames"]}, frames covered by a fallback: {summary["fallback_frames"]}')
    print(f'speed: {summary["processing_fps"]:.1f} fps ({summary["seconds"]:.1f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
