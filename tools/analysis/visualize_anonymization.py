"""Show what anonymization does: detected actions on raw and anonymized key frames, and a grid of face crops.

Writes into ``--out-dir``:

- ``frames/<video_id>_<timestamp>.png``, for ``--num-clips`` val clips spread over the val set: the key frame
  raw (left) and anonymized (right), side by side and enlarged ``--scale`` times, with the detector's actions
  drawn on both halves (the detector only sees the anonymized clip; the raw half shows what it hides). Each
  proposal with an action scoring at least ``--score-thr`` gets its box and up to ``--max-labels`` actions,
  named from the label map of the config's val dataset.
- ``face_grid.png``: up to ``--num-faces`` identity-labelled faces of as many val clips spread over the val set,
  one row each: the raw crop, then the crop anonymized by CONFIG's method and by each of ``--methods``. The
  crops are those the data preprocessor hands the privacy metrics (evaluation mode), enlarged without smoothing
  so that pixelation and noise show as they are.

Example::

    python tools/analysis/visualize_anonymization.py \\
        configs/detection/slowonly/slowonly-adversarial_r18_1xb8-4x6x1-600i_toy-ava-rgb.py \\
        work_dirs/privacy_utility/learned/iter_600.pth --out-dir work_dirs/anonymization_figures \\
        --methods configs/detection/slowonly/slowonly-pixelate_r18_1xb8-4x6x1-600i_toy-ava-rgb.py
"""
import argparse
import os
import os.path as osp
import re
import sys
import textwrap
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from mmaction.evaluation import read_labelmap
from mmengine.config import Config, DictAction
from mmengine.dataset import pseudo_collate
from mmengine.visualization import Visualizer
from torch.utils.data import DataLoader, Subset

import mmanon  # noqa: F401  (applies the compatibility fixes and registers mmanon's components)
from mmanon.apis.faces import clip_faces, collect_faces, face_loader, load_detector
from mmanon.datasets.ava_face_dataset import faces_in_clip
from mmanon.models.utils import to_uint8
from mmanon.registry import MODELS, build_in_scope
from mmanon.utils import add_checkpoint_arguments, apply_checkpoint_arguments

# Layout of the face grid, in pixels.
GRID_PAD = 4
GRID_HEADER = 28
# Width of a character of the grid's titles (font size 9), for wrapping them to a cell.
TITLE_CHAR_WIDTH = 7
BOX_COLOUR = (0, 255, 0)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Draw detected actions on raw | anonymized key frames of val clips, and a grid of raw and '
        'anonymized face crops for several anonymizers.')
    parser.add_argument('config', help='detector config whose model.data_preprocessor is an '
                        'mmanon.AnonymizerDataPreprocessor; its val set is shown')
    parser.add_argument('checkpoint', help='its trained checkpoint (tools/train.py)')
    parser.add_argument('--out-dir', required=True, help='folder of frames/*.png and face_grid.png')
    parser.add_argument('--methods', nargs='+', default=[], metavar='CONFIG[:CHECKPOINT]',
                        help='more columns of the face grid: detector configs, each with the checkpoint of its '
                        'learned anonymizer after a colon (handcrafted anonymizers need none)')
    parser.add_argument('--num-clips', type=int, default=4, help='val clips drawn (default: %(default)s)')
    parser.add_argument('--num-faces', type=int, default=8,
                        help='most faces (rows) of the grid, from as many val clips spread over the val set '
                        '(default: %(default)s)')
    parser.add_argument('--score-thr', type=float, default=0.5,
                        help='lowest action score drawn (default: %(default)s)')
    parser.add_argument('--max-labels', type=int, default=3,
                        help='most actions written per person (default: %(default)s)')
    parser.add_argument('--scale', type=int, default=4,
                        help='enlargement of the frames, so that small clips stay legible (default: %(default)s)')
    parser.add_argument('--cell-size', type=int, default=96,
                        help='side of a face in the grid, in pixels (default: %(default)s)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='device of the models (default: cuda where available, else cpu)')
    parser.add_argument('--num-workers', type=int,
                        help='data loading processes (default: the config\'s val_dataloader.num_workers)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of CONFIG, key=value pairs')
    add_checkpoint_arguments(parser)
    return parser.parse_args(argv)


def action_names(config: Config, num_columns: int) -> Dict[int, str]:
    """The action name of each score column of the detector (column 0 is the background)."""
    dataset = config.val_dataloader.dataset
    names = {}
    if dataset.get('label_file'):
        with open(dataset.label_file, encoding='utf-8') as f:
            names = {item['id']: item['name'] for item in read_labelmap(f)[0]}
    # With custom_classes AVADataset numbers the columns in their order, else by action id.
    action_ids = [0, *dataset.custom_classes] if dataset.get('custom_classes') else range(num_columns)
    return {column: names.get(action_id, f'action {action_id}')
            for column, action_id in enumerate(action_ids) if 0 < column < num_columns}


def _to_image(pixels: torch.Tensor) -> np.ndarray:
    """(C, H, W) pixel values as an (H, W, C) uint8 image."""
    return to_uint8(pixels.float()).permute(1, 2, 0).cpu().numpy()


def _enlarge(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize to (w, h): every source pixel stays a visible block."""
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST)


def _caption_box() -> dict:
    return dict(facecolor='black', alpha=0.6, pad=1, edgecolor='none')


def pixel_preprocessor(config: Config, model) -> torch.nn.Module:
    """The detector's data preprocessor without normalisation: its output is the anonymized clip in pixels.

    Built from the config with ``mean``, ``std`` and ``to_rgb`` turned off and sharing the model's anonymizer,
    so the frames show exactly what the detector's own preprocessor anonymizes, through its public forward.
    """
    preprocessor_cfg = dict(config.model.data_preprocessor, mean=None, std=None, to_rgb=False, discriminator=None)
    preprocessor = build_in_scope(MODELS, preprocessor_cfg)
    preprocessor.anonymizer = model.data_preprocessor.anonymizer
    return preprocessor.eval()


@torch.no_grad()
def draw_clip(model, pixels: torch.nn.Module, sample: dict, config: Config, visualizer: Visualizer,
              args) -> np.ndarray:
    """The raw | anonymized key frame of one dataset item with the detected actions, as an RGB image.

    Args:
        model (nn.Module): The detector, its data preprocessor an ``AnonymizerDataPreprocessor``.
        pixels (nn.Module): Its preprocessor without normalisation, see :func:`pixel_preprocessor`.
        sample (dict): One item of the val dataset.
        config (Config): The detector's config, for the action names.
        visualizer (Visualizer): Draws the boxes and the labels.
        args (argparse.Namespace): The flags of :func:`parse_args`.

    Returns:
        np.ndarray: (H * scale, 2 * W * scale, 3) uint8.
    """
    batch = pseudo_collate([sample])
    prediction = model.test_step(batch)[0]
    anonymized = pixels(batch, training=False)['inputs'][0]
    raw = sample['inputs']
    key = raw.shape[1] // 2  # SampleAVAFrames centres the clip on the key frame
    height, width = raw.shape[-2:]
    size = (width * args.scale, height * args.scale)
    image = np.concatenate([_enlarge(_to_image(clip[:, key]), size) for clip in (raw, anonymized)], axis=1)

    pred = prediction.pred_instances
    # The detector reports boxes normalised to the original frame; move them into the clip as the faces are.
    boxes = faces_in_clip(pred.bboxes.cpu().numpy(), prediction.metainfo.get('crop_quadruple', (0, 0, 1, 1)),
                          (height, width), bool(prediction.metainfo.get('flip', False))) * args.scale
    scores = pred.scores.cpu().numpy()
    names = action_names(config, scores.shape[1])
    visualizer.set_image(image)
    for offset, caption in ((0, 'raw'), (size[0], 'anonymized')):
        visualizer.draw_texts(caption, np.array([offset + 2, 2]), colors='white', font_sizes=10,
                              bboxes=_caption_box())
    for box, box_scores in zip(boxes, scores):
        columns = [c for c in np.argsort(-box_scores) if c in names and box_scores[c] >= args.score_thr]
        if not columns:
            continue
        text = '\n'.join(f'{names[c]} {box_scores[c]:.2f}' for c in columns[:args.max_labels])
        for offset in (0, size[0]):
            shifted = box + np.array([offset, 0, offset, 0])
            visualizer.draw_bboxes(shifted[None], edge_colors=[BOX_COLOUR], line_widths=2)
            # Written at the bottom of the box: its top is the head, which the figure is about.
            visualizer.draw_texts(text, np.array([shifted[0] + 2, shifted[3] - 2]), colors='white', font_sizes=8,
                                  vertical_alignments='bottom', bboxes=_caption_box())
    return visualizer.get_image()


def _wrap_title(title: str, width: int) -> str:
    """A class-name column title on at most two lines of ``width`` pixels, broken between CamelCase words."""
    lines = textwrap.wrap(re.sub(r'(?<=[a-z])(?=[A-Z])', ' ', title), max(1, width // TITLE_CHAR_WIDTH))
    return '\n'.join(line.replace(' ', '') for line in lines[:2])


def face_grid(columns: Sequence[Tuple[str, np.ndarray]], identities: Sequence[int], cell_size: int,
              visualizer: Visualizer) -> np.ndarray:
    """A grid of face crops, one row per face and one titled column per source.

    Args:
        columns (Sequence[tuple[str, np.ndarray]]): Title and (N, h, w, C) uint8 crops of each column.
        identities (Sequence[int]): The identity of each row.
        cell_size (int): Side of a cell.
        visualizer (Visualizer): Writes the titles.

    Returns:
        np.ndarray: RGB image of height ``GRID_HEADER + N * (cell_size + GRID_PAD)`` and width
        ``GRID_PAD + len(columns) * (cell_size + GRID_PAD)``.
    """
    step = cell_size + GRID_PAD
    canvas = np.full((GRID_HEADER + len(identities) * step, GRID_PAD + len(columns) * step, 3), 255, np.uint8)
    for col, (_, crops) in enumerate(columns):
        for row, crop in enumerate(crops):
            y, x = GRID_HEADER + row * step, GRID_PAD + col * step
            canvas[y:y + cell_size, x:x + cell_size] = _enlarge(crop, (cell_size, cell_size))
    visualizer.set_image(canvas)
    visualizer.draw_texts([_wrap_title(title, cell_size) for title, _ in columns],
                          np.array([[GRID_PAD + col * step, 4] for col in range(len(columns))]), colors='black',
                          font_sizes=9)
    visualizer.draw_texts([f'id {identity}' for identity in identities],
                          np.array([[GRID_PAD + 2, GRID_HEADER + row * step + 2] for row in range(len(identities))]),
                          colors='white', font_sizes=7, bboxes=_caption_box())
    return visualizer.get_image()


def spread_indices(length: int, num: int) -> List[int]:
    """At most ``num`` indices of a sequence of ``length`` items, evenly spread from its first to its last."""
    return np.unique(np.linspace(0, length - 1, num).round().astype(int)).tolist()


def parse_method(spec: str) -> Tuple[str, Optional[str]]:
    """``CONFIG[:CHECKPOINT]`` as (config, checkpoint or None)."""
    config, _, checkpoint = spec.partition(':')
    if not osp.isfile(config):
        raise FileNotFoundError(f'--methods: the config {config} does not exist')
    return config, checkpoint or None


def write_png(path: str, image: np.ndarray) -> None:
    if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f'could not write {path}')


def visualize(args) -> None:
    """Write the frames and the face grid; see the module docstring.

    Args:
        args (argparse.Namespace): The flags of :func:`parse_args`.
    """
    if min(args.num_clips, args.num_faces, args.scale, args.cell_size, args.max_labels) < 1:
        raise ValueError('--num-clips, --num-faces, --scale, --cell-size and --max-labels must be positive')
    methods = [parse_method(spec) for spec in args.methods]
    config = Config.fromfile(args.config)
    if args.cfg_options:
        config.merge_from_dict(args.cfg_options)
    model = load_detector(config, args.checkpoint, args.device, args.allow_missing_keys)
    loader = face_loader(config, 'val', args.num_workers)
    visualizer = Visualizer.get_instance('mmanon_visualize_anonymization')

    frame_dir = osp.join(args.out_dir, 'frames')
    os.makedirs(frame_dir, exist_ok=True)
    dataset = loader.dataset
    pixels = pixel_preprocessor(config, model)
    for index in spread_indices(len(dataset), args.num_clips):
        sample = dataset[index]
        meta = sample['data_samples'].metainfo
        path = osp.join(frame_dir, f'{meta["video_id"]}_{meta["timestamp"]}.png')
        write_png(path, draw_clip(model, pixels, sample, config, visualizer, args))
        print(f'wrote {path}', flush=True)

    preprocessors = [model.data_preprocessor]
    for method_config, checkpoint in methods:
        method_model = load_detector(Config.fromfile(method_config), checkpoint, args.device, args.allow_missing_keys)
        preprocessors.append(method_model.data_preprocessor)
    # Faces of clips spread over the val set: the first clips would show a few persons of one video only.
    grid_loader = DataLoader(Subset(dataset, spread_indices(len(dataset), args.num_faces)),
                             batch_size=loader.batch_size, num_workers=loader.num_workers, collate_fn=pseudo_collate)
    columns, identities = [], None
    for preprocessor in preprocessors:
        faces = collect_faces(grid_loader, clip_faces(preprocessor), args.num_faces, progress=False)
        if identities is None:
            identities = faces.identities
            columns.append(('raw', faces.raw_crops.permute(0, 2, 3, 1).numpy()))
        elif not torch.equal(faces.identities, identities):
            raise ValueError(f'the {type(preprocessor.anonymizer).__name__} method cut other faces from the val '
                             'set than the first; the grid compares methods on the same faces')
        columns.append((type(preprocessor.anonymizer).__name__, faces.anonymized_crops.permute(0, 2, 3, 1).numpy()))
    path = osp.join(args.out_dir, 'face_grid.png')
    write_png(path, face_grid(columns, identities.tolist(), args.cell_size, visualizer))
    print(f'wrote {path}: {len(identities)} faces, columns {", ".join(title for title, _ in columns)}', flush=True)


def main(argv=None):
    args = parse_args(argv)
    apply_checkpoint_arguments(args)
    try:
        visualize(args)
    except (OSError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
