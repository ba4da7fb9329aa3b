"""Face images labelled with identities, for the face discriminator and the attackers.

Two layouts, the ones face-recognition datasets ship in:

- one folder per identity (CASIA-WebFace, VGGFace2, LFW)::

      <data_prefix>/<identity>/<image>

- a list file of ``path identity`` lines (``path`` relative to the data prefix, ``identity`` an integer or
  a name, separated by white space)::

      0000045/001.jpg 0000045

and, with either, optionally a landmark file of ``path x1 y1 ... x5 y5`` lines: the five points of
:data:`mmanon.datasets.transforms.SPHEREFACE_TEMPLATE` (eye on the image's left, other eye, nose tip, left
and right mouth corner) in pixels of the image at ``path``, as in the landmark files that come with the
common "aligned" distributions of CASIA-WebFace and LFW.
"""
import logging
import os
import os.path as osp
from collections import Counter
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from mmanon.registry import DATASETS
from .data_files import BadItems, DataFileError, read_text_lines
from .transforms import FaceAlign, FaceImageError, read_face_image
from .transforms.face_align import degenerate_landmarks

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')
NUM_LANDMARKS = 5
CHECKS = ('none', 'exist', 'decode')


def _numbered_rows(path: str):
    """``(row number, fields)`` of the non-blank lines of a white-space separated text file."""
    for row_number, line in enumerate(read_text_lines(path), start=1):
        fields = line.split()
        if fields:
            yield row_number, fields


def load_landmark_file(path: str, on_bad_data: str = 'raise') -> Dict[str, np.ndarray]:
    """Read a landmark file of ``path x1 y1 ... x5 y5`` lines.

    Args:
        path (str): The landmark file.
        on_bad_data (str): ``'raise'``: a row with the wrong number of values, a value that is not a finite
            number, degenerate landmarks (see :func:`mmanon.datasets.transforms.face_align.degenerate_landmarks`)
            or an image listed twice with different points raises a ``ValueError`` naming the file and row.
            ``'skip'``: such rows are left out (both rows of a conflicting pair) and one warning counts them.
            Defaults to 'raise'.

    Returns:
        dict[str, np.ndarray]: (5, 2) float32 points per image path, normalised with ``osp.normpath``.
    """
    bad_rows = BadItems(on_bad_data, ValueError, f'bad rows of {path}')
    landmarks, first_rows, conflicting = {}, {}, set()
    for row_number, fields in _numbered_rows(path):
        where = f'{path}, row {row_number}'
        if len(fields) != 1 + 2 * NUM_LANDMARKS:
            bad_rows.add(f'{where}: expected a path and {2 * NUM_LANDMARKS} values (x1 y1 ... x5 y5), got '
                         f'{len(fields) - 1} values')
            continue
        try:
            points = np.array([float(v) for v in fields[1:]], dtype=np.float32).reshape(NUM_LANDMARKS, 2)
        except ValueError:
            bad_rows.add(f'{where}: the landmarks of {fields[0]} must be numbers, got {" ".join(fields[1:])}')
            continue
        if not np.isfinite(points).all():
            bad_rows.add(f'{where}: the landmarks of {fields[0]} must be finite, got {" ".join(fields[1:])}')
            continue
        problem = degenerate_landmarks(points)
        if problem is not None:
            bad_rows.add(f'{where}: {fields[0]}: {problem}')
            continue
        key = osp.normpath(fields[0])
        if key in landmarks and not np.array_equal(landmarks[key], points):
            bad_rows.add(f'{where}: {fields[0]} already has other landmarks in row {first_rows[key]}')
            conflicting.add(key)
            continue
        landmarks[key] = points
        first_rows.setdefault(key, row_number)
    bad_rows.warn()
    return {key: points for key, points in landmarks.items() if key not in conflicting}


class _Item(NamedTuple):
    """An image found by the layout, before it is validated and labelled."""
    path: str  # relative to the image prefix
    identity: str
    where: str  # the file and row, or the file, it comes from, for messages


def _sorted_identities(names) -> List[str]:
    """Identity names in label order: numerically when every name is an integer, else as strings."""
    names = set(names)
    if all(name.isdigit() for name in names):
        return sorted(names, key=lambda name: (int(name), name))
    return sorted(names)


@DATASETS.register_module()
class FaceIdentityDataset(BaseDataset):
    """Face images with identity labels, in the per-identity folder or the list-file layout (see the
    module's documentation), optionally with five landmarks per image for alignment.

    Identities map to contiguous labels 0, 1, ... in sorted order (numerically when all are integers, so a
    list of labels 0..N-1 keeps them), or in the order of ``metainfo['classes']`` when given (a list, or a
    file with one name per line): give a validation split the training split's classes so that both label
    identities alike. After loading, ``metainfo`` holds ``classes`` (the identity names) and
    ``num_identities``.

    Each data info holds ``img_path``, ``gt_label``, ``identity`` and, with a landmark file,
    ``landmarks`` ((5, 2) float32); a typical pipeline is ``LoadFaceImage``, ``FaceAlign``, augmentations
    (mmcv's ``RandomFlip``, ``BrightnessContrastJitter``), ``PackFaceInputs``, which yields ``inputs``, the
    (3, H, W) uint8 RGB aligned crop, and ``data_samples``, an ``ActionDataSample`` with ``gt_label``.

    Bad input, found while the dataset is built: an identity folder without images, a list-file row that is
    not ``path identity``, an identity outside the given classes, a malformed landmark file or degenerate
    landmarks (see :func:`load_landmark_file`), an image the landmark file has no entry for, by
    ``check_images``, missing or undecodable images and, with ``'decode'`` and a ``FaceAlign`` in the
    pipeline, landmarks that put most of the aligned crop outside their image. Under ``on_bad_data='raise'``
    the first one raises an error naming the file and row (or folder); under ``'skip'`` bad items are left out
    and one warning per kind counts them. The list and landmark files must be UTF-8 (a byte-order mark and CRLF
    line ends are accepted), and a dataset left empty raises, whatever ``on_bad_data`` says. Images that fail
    to decode later, in the pipeline, or whose landmarks ``FaceAlign`` refuses there, raise a
    ``FaceImageError`` naming the file; in training under ``'skip'`` the sample is replaced by another one and
    a warning counts them (test mode cannot replace samples: check the images up front with
    ``check_images='decode'`` instead).

    Args:
        ann_file (str): The list file; empty for the folder layout. Relative paths are relative to
            ``data_root``. Defaults to ''.
        pipeline (Sequence[dict | callable]): The transforms. Defaults to ().
        landmark_file (str, optional): The landmark file, its paths relative to the image prefix; relative
            to ``data_root``. Defaults to None (no ``landmarks``; ``FaceAlign`` then centre-crops).
        data_root (str): Root of ``ann_file``, ``landmark_file`` and ``data_prefix``. Defaults to ''.
        data_prefix (dict): ``img_path``, the folder of the images (of the identity folders). Defaults to
            ``dict(img_path='')``.
        on_bad_data (str): 'raise' or 'skip', see above. Defaults to 'raise'.
        check_images (str): What is checked of every image up front: 'none'; 'exist', that the listed files
            exist (images found by the folder layout do); or 'decode', that they decode (reads every image:
            slow on large datasets). Defaults to 'exist'.
        image_extensions (Sequence[str]): File endings (case-insensitive) taken as images in the folder
            layout; other files are ignored. Defaults to ('.jpg', '.jpeg', '.png', '.bmp', '.webp').
        metainfo (dict, optional): ``classes``, the identity names in label order (a list, or a UTF-8 file of
            one name per line). Defaults to None (every identity found, sorted).
        **kwargs: The other arguments of mmengine's ``BaseDataset`` (``test_mode``, ``indices``,
            ``lazy_init``, ...).
    """

    def __init__(self,
                 ann_file: str = '',
                 pipeline: Sequence = (),
                 landmark_file: Optional[str] = None,
                 data_root: str = '',
                 data_prefix: dict = dict(img_path=''),
                 on_bad_data: str = 'raise',
                 check_images: str = 'exist',
                 image_extensions: Sequence[str] = IMAGE_EXTENSIONS,
                 metainfo: Optional[dict] = None,
                 **kwargs) -> None:
        if on_bad_data not in ('raise', 'skip'):
            raise ValueError(f"on_bad_data must be 'raise' or 'skip', got {on_bad_data!r}")
        if check_images not in CHECKS:
            raise ValueError(f'check_images must be one of {CHECKS}, got {check_images!r}')
        self.landmark_file = landmark_file
        self.on_bad_data = on_bad_data
        self.check_images = check_images
        self.image_extensions = tuple(ext.lower() for ext in image_extensions)
        self.skipped_in_pipeline = 0
        classes = (metainfo or {}).get('classes')
        if isinstance(classes, str) and osp.isfile(classes):
            # Read here like the other files (mmengine's reader would keep a byte-order mark in the first name).
            metainfo = dict(metainfo, classes=[line.strip() for line in read_text_lines(classes) if line.strip()])
        super().__init__(ann_file=ann_file, metainfo=metainfo, data_root=data_root, data_prefix=data_prefix,
                         pipeline=list(pipeline), **kwargs)

    def _join_prefix(self) -> None:
        super()._join_prefix()
        if self.landmark_file and not osp.isabs(self.landmark_file) and self.data_root:
            self.landmark_file = osp.join(self.data_root, self.landmark_file)

    def load_data_list(self) -> List[dict]:
        """Find the images, validate them, their landmarks and identities, and label them."""
        image_root = self.data_prefix.get('img_path', '')
        items = self._list_items() if self.ann_file else self._folder_items(image_root)
        if self.landmark_file:
            items, landmarks = self._with_landmarks(items)
        else:
            landmarks = {}
        items = self._checked_images(items, image_root, landmarks)
        classes = self._classes(items)
        labels = {name: label for label, name in enumerate(classes)}
        unknown = BadItems(self.on_bad_data, ValueError, 'images of identities outside metainfo["classes"]')
        data_list = []
        for path, identity, where in items:
            if identity not in labels:
                unknown.add(f'{where}: identity {identity!r} is not in metainfo["classes"]')
                continue
            info = dict(img_path=osp.join(image_root, path), gt_label=labels[identity], identity=identity)
            if self.landmark_file:
                info['landmarks'] = landmarks[osp.normpath(path)]
            data_list.append(info)
        unknown.warn()
        if not data_list:
            source = self.ann_file or f'the identity folders of {image_root}'
            raise DataFileError(f'FaceIdentityDataset has no samples: no usable image is listed in {source} (the '
                                'warnings above name the items left out)')
        self._metainfo.update(classes=tuple(classes), num_identities=len(classes))
        return data_list

    def _list_items(self) -> List[_Item]:
        bad_rows = BadItems(self.on_bad_data, ValueError, f'bad rows of {self.ann_file}')
        items = []
        for row_number, fields in _numbered_rows(self.ann_file):
            where = f'{self.ann_file}, row {row_number}'
            if len(fields) != 2:
                bad_rows.add(f'{where}: expected 2 fields (path identity), got {len(fields)}')
                continue
            items.append(_Item(fields[0], fields[1], where))
        bad_rows.warn()
        return items

    def _folder_items(self, image_root: str) -> List[_Item]:
        if not osp.isdir(image_root):
            raise FileNotFoundError(f'the image folder {image_root!r} does not exist')
        empty = BadItems(self.on_bad_data, ValueError, f'identity folders without images under {image_root}')
        items = []
        with os.scandir(image_root) as entries:
            folders = sorted(entry.name for entry in entries if entry.is_dir())
        for identity in folders:
            folder = osp.join(image_root, identity)
            with os.scandir(folder) as entries:
                names = sorted(entry.name for entry in entries
                               if entry.is_file() and entry.name.lower().endswith(self.image_extensions))
            if not names:
                empty.add(f'the identity folder {folder} holds no images ({", ".join(self.image_extensions)})')
            items += [_Item(f'{identity}/{name}', identity, osp.join(folder, name)) for name in names]
        empty.warn()
        return items

    def _with_landmarks(self, items: List[_Item]) -> Tuple[List[_Item], Dict[str, np.ndarray]]:
        landmarks = load_landmark_file(self.landmark_file, self.on_bad_data)
        missing = BadItems(self.on_bad_data, ValueError, f'images without landmarks in {self.landmark_file}')
        kept = []
        for item in items:
            if osp.normpath(item.path) not in landmarks:
                missing.add(f'{self.landmark_file} has no landmarks for {item.path} ({item.where})')
                continue
            kept.append(item)
        missing.warn()
        return kept, landmarks

    def _checked_images(self, items: List[_Item], image_root: str, landmarks: Dict[str, np.ndarray]) -> List[_Item]:
        if self.check_images == 'none' or (self.check_images == 'exist' and not self.ann_file):
            return items
        unreadable = BadItems(self.on_bad_data, FaceImageError, 'missing or unreadable images')
        misplaced = BadItems(self.on_bad_data, FaceImageError, f'images whose landmarks in {self.landmark_file} do '
                             'not locate a face')
        align = next((t for t in self.pipeline.transforms if isinstance(t, FaceAlign)), None) if landmarks else None
        kept = []
        for item in items:
            path = osp.join(image_root, item.path)
            try:
                if self.check_images == 'decode':
                    img = read_face_image(path)
                elif not osp.isfile(path):
                    raise FaceImageError(f'the face image {path} does not exist')
            except FaceImageError as e:
                unreadable.add(f'{item.where}: {e}' if self.ann_file else str(e))
                continue
            if self.check_images == 'decode' and align is not None:
                try:
                    align.landmark_matrix(img.shape[:2], landmarks[osp.normpath(item.path)], path)
                except FaceImageError as e:
                    misplaced.add(f'{self.landmark_file}: {e}')
                    continue
            kept.append(item)
        unreadable.warn()
        misplaced.warn()
        return kept

    def _classes(self, items: List[_Item]) -> List[str]:
        classes = self._metainfo.get('classes')
        if classes is None:
            return _sorted_identities(item.identity for item in items)
        if isinstance(classes, str):
            raise FileNotFoundError(f'metainfo["classes"] must be a list of identity names or an existing file '
                                    f'of them, got {classes!r}')
        classes = [str(name) for name in classes]
        duplicates = sorted(name for name, count in Counter(classes).items() if count > 1)
        if duplicates:
            raise ValueError(f'metainfo["classes"] names identities twice: {duplicates}')
        return classes

    def prepare_data(self, idx: int) -> Optional[dict]:
        """Run the pipeline on a sample; under ``on_bad_data='skip'`` in training, an unreadable image gives
        None, which makes mmengine draw another sample.

        Args:
            idx (int): The sample index.

        Returns:
            dict | None: The pipeline's output.
        """
        try:
            return super().prepare_data(idx)
        except FaceImageError as e:
            if self.on_bad_data == 'raise':
                raise
            if self.test_mode:
                raise FaceImageError(f'{e}; in test mode samples cannot be skipped, so check the images up front '
                                     "with check_images='decode'") from e
            self.skipped_in_pipeline += 1
            print_log(f'skipped an unreadable image (on_bad_data="skip"; {self.skipped_in_pipeline} so far in this '
                      f'process): {e}', logger='current', level=logging.WARNING)
            return None
