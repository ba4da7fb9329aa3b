"""AVA with face boxes and identities that follow the frames through the stock AVA pipelines."""
import os
import os.path as osp
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch
from mmaction.datasets import AVADataset
from mmaction.datasets.transforms import (Flip, Fuse, PackActionInputs, RandomCrop, RandomRescale, Resize,
                                          SampleAVAFrames, TenCrop, ThreeCrop)
from mmengine.logging import print_log
from mmengine.structures import InstanceData

from mmanon.registry import DATASETS
from .data_files import BadItems, DataFileError, load_array_pickle, read_text_lines, split_csv_line
from .face_annotations import FaceRecord, load_face_file, parse_face_row
from .face_tubes import FrameFaces, interpolate_boxes, link_keyframe_faces, match_keyframe_faces

# Transforms whose effect on the frame is recorded in ``crop_quadruple``, ``img_shape`` and ``flip``. RandomCrop
# covers its subclasses CenterCrop, RandomResizedCrop and MultiScaleCrop.
_GEOMETRY_TRANSFORMS = (Resize, RandomRescale, RandomCrop, Flip)
AVA_COLUMNS = 'video_id,timestamp,x1,y1,x2,y2,action_id,entity_id'
# The discriminator classifies identities 0 .. max(identity), so labels are bounded: a typo such as 99999999
# would otherwise ask for a classifier of 10^8 classes. Face datasets of AVA's scale have thousands.
MAX_IDENTITIES = 100000


def parse_ava_row(row: List[str]) -> Tuple[FaceRecord, int, int]:
    """Parse one row of an AVA annotation CSV; raises ``ValueError`` naming the offending field.

    The first six columns have the layout of the face file, so one parser validates the key and the box of
    both.

    Args:
        row (list[str]): The row's cells.

    Returns:
        tuple: The key and box as a :class:`FaceRecord` (without identity), the action id and the entity id.
    """
    if len(row) != 8:
        raise ValueError(f'expected 8 columns ({AVA_COLUMNS}), got {len(row)}')
    key_and_box = parse_face_row(row[:6] + [''])
    if not key_and_box.is_keyframe:
        raise ValueError(f'timestamp must be an integer (AVA annotates whole seconds), got {row[1]!r}')
    ids = []
    for name, text in zip(('action_id', 'entity_id'), row[6:]):
        try:
            ids.append(int(text))
        except ValueError:
            raise ValueError(f'{name} must be an integer, got {text!r}') from None
    return key_and_box, ids[0], ids[1]


def _person(face: FaceRecord) -> Optional[tuple]:
    """Who a face is, to follow it from keyframe to keyframe: its AVA person, else its identity, else None."""
    if face.entity_id >= 0:
        return ('entity', face.entity_id)
    if face.identity >= 0:
        return ('identity', face.identity)
    return None


def _proposal_problem(key, boxes, values: bool = True) -> Optional[str]:
    """What is wrong with one entry of a proposal file (its key, type and shape, and with ``values`` its
    values), or None."""
    if not isinstance(key, str) or len(key.split(',')) != 2:
        return 'keys must be "video_id,timestamp" strings'
    if not isinstance(boxes, np.ndarray) or boxes.dtype.kind not in 'fiu':
        return f'proposals must be a numeric numpy array, got {type(boxes).__name__}'
    if boxes.ndim != 2 or boxes.shape[1] not in (4, 5) or not len(boxes):
        return f'proposals must be (N, 4) boxes or (N, 5) boxes and scores with N >= 1, got shape {boxes.shape}'
    if not values:
        return None
    if not np.isfinite(boxes).all():
        return 'proposals must be finite'
    if boxes[:, :4].min() < 0 or boxes[:, :4].max() > 1:
        return (f'proposal boxes must be normalised to [0, 1], got values from {boxes[:, :4].min():g} to '
                f'{boxes[:, :4].max():g}')
    return None


def load_proposal_file(path: str, on_bad_data: str = 'raise') -> Dict[str, np.ndarray]:
    """Read an AVA proposal file without running code from it, and validate it.

    The file is unpickled with an allow-list of numpy's array classes (see
    :func:`mmanon.datasets.data_files.load_array_pickle`). It must hold a dict of ``video_id,timestamp`` keys
    and (N, 4) boxes or (N, 5) boxes and scores, finite, boxes normalised to [0, 1], N >= 1.

    Args:
        path (str): The pickle file.
        on_bad_data (str): ``'raise'``: a bad entry raises a ``DataFileError`` naming the file and key;
            ``'skip'``: bad entries are left out and one warning counts them. Defaults to 'raise'.

    Returns:
        dict[str, np.ndarray]: The valid entries.
    """
    proposals = load_array_pickle(path)
    if not isinstance(proposals, dict):
        raise DataFileError(f'{path} must hold a dict of "video_id,timestamp" keys and (N, 4) or (N, 5) '
                            f'arrays, got a {type(proposals).__name__}')
    # AVA's files hold 200k entries: their values are checked in one pass over all of them, and entry by
    # entry only when that pass finds a problem.
    by_width = {4: [], 5: []}
    for key, boxes in proposals.items():
        if _proposal_problem(key, boxes, values=False) is not None:
            break
        by_width[boxes.shape[1]].append(boxes)
    else:
        rows = [np.concatenate(arrays).astype(np.float64, copy=False) for arrays in by_width.values() if arrays]
        if all(np.isfinite(r).all() and r[:, :4].min() >= 0 and r[:, :4].max() <= 1 for r in rows):
            return proposals
    bad = BadItems(on_bad_data, DataFileError, f'bad proposals of {path}')
    valid = {}
    for key, boxes in proposals.items():
        problem = _proposal_problem(key, boxes)
        if problem is not None:
            bad.add(f'{path}, key {key!r}: {problem}')
            continue
        valid[key] = boxes
    bad.warn()
    return valid


def faces_in_clip(bboxes: np.ndarray, crop_quadruple: Sequence[float], img_shape: Tuple[int, int],
                  flip: bool) -> np.ndarray:
    """Map normalised boxes of the original frame to pixels of the transformed clip.

    Args:
        bboxes (np.ndarray): (F, 4) boxes (x1, y1, x2, y2), normalised by the original frame size.
        crop_quadruple (Sequence[float]): (x, y, w, h) of the region of the original frame that the clip
            shows, normalised, as mmaction's crops record it.
        img_shape (tuple[int, int]): (height, width) of the clip.
        flip (bool): Whether the clip was flipped horizontally after cropping.

    Returns:
        np.ndarray: (F, 4) float32 boxes in clip pixels.
    """
    x, y, w, h = (float(v) for v in crop_quadruple)
    height, width = img_shape
    boxes = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4).copy()
    boxes[:, 0::2] = (boxes[:, 0::2] - x) / w * width
    boxes[:, 1::2] = (boxes[:, 1::2] - y) / h * height
    # Clip as RandomCrop._box_crop clips the person boxes: to the last pixel, before the flip.
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height - 1)
    if flip:
        boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
    return boxes.astype(np.float32)


def _recorded_geometry(results: dict) -> Optional[tuple]:
    """What the transforms recorded of the frame geometry so far; None before the frames are decoded."""
    if 'img_shape' not in results:
        return None
    quadruple = results.get('crop_quadruple')
    return (tuple(results['img_shape']), None if quadruple is None else tuple(np.asarray(quadruple).tolist()),
            bool(results.get('flip', False)))


@DATASETS.register_module()
class AVAFaceDataset(AVADataset):
    """AVA whose samples also carry the faces of each keyframe and the identities of its persons.

    A drop-in replacement for mmaction2's :class:`AVADataset`: a stock AVA config switches to it by its
    ``type`` and, optionally, a ``face_file``; the pipeline stays as it is. Each packed data sample gets

    - ``gt_instances.identities`` (LongTensor, one per person box, in the order of ``gt_instances.bboxes``);
      -1 where unknown;
    - ``gt_faces`` (:class:`InstanceData`, only with a ``face_file``): ``bboxes`` (FloatTensor (F, 4), in
      pixels of the final clip, moved by the pipeline's resizes, crops and flip exactly as the frames and
      person boxes are, and clipped to the clip like the person boxes; a face cropped away entirely keeps
      its row with zero width or height) and ``identities`` (LongTensor (F,), -1 where unknown). A keyframe
      without faces gets F = 0;
    - ``face_tubes`` (:class:`InstanceData`, only with a ``face_file``): ``bboxes`` (FloatTensor (K, T, 4)),
      every face of the clip in each of its T sampled frames, in pixels of the final clip like ``gt_faces``,
      NaN in the frames where a face has no box. The first F tubes are the keyframe's faces, in the order of
      ``gt_faces``: from the face file's rows of non-key frames where they have a box there, interpolated
      between the person's keyframes elsewhere; then come the faces of non-key rows that are not in the
      keyframe (see :mod:`mmanon.datasets.face_tubes`). The anonymizer data preprocessor anonymizes these.

    The face boxes follow the geometry that mmaction's transforms record (``crop_quadruple``, ``img_shape``,
    ``flip``), so the pipeline must keep mmaction's documented order (Flip after every crop), must not be lazy,
    and must end with ``PackActionInputs``; a pipeline that breaks this raises at construction, and a transform
    outside mmaction's geometric ones that changes the recorded geometry raises when it does.

    Every bad input is found while the dataset is built, in the main process: malformed rows of the AVA CSV
    and of the exclusion CSV, malformed face rows, face rows of videos or timestamps that the AVA CSV does not
    annotate, identities of ``max_identities`` or more, a person linked to two identities, malformed proposals,
    and samples whose frames are missing (for rawframes, every frame that the pipeline's ``SampleAVAFrames``
    may read for the keyframe: the first, centre and last of each of its ``clip_len`` slots). Exact repeats of
    a face row are dropped with a warning. The CSVs must be UTF-8 (a byte-order mark and CRLF line ends are
    accepted); another encoding raises whatever ``on_bad_data`` says, and so does a dataset left empty.

    The proposal file is unpickled with an allow-list of numpy's array classes (see
    :func:`mmanon.datasets.data_files.load_array_pickle`), where mmaction2's ``AVADataset`` unpickles it in
    full: a crafted proposal file cannot run code here.

    Args:
        ann_file (str): The AVA annotation CSV (``video_id,timestamp,x1,y1,x2,y2,action_id,entity_id``).
        pipeline (list[dict | callable]): The stock AVA pipeline, ending with ``PackActionInputs``.
        face_file (str, optional): The face CSV of :mod:`mmanon.datasets.face_annotations`. Defaults to None
            (no ``gt_faces``).
        identity_source (str, optional): Where ``gt_instances.identities`` come from. ``'face_file'``: the
            ``identity`` of a face row whose ``entity_id`` links it to the person (a person is one
            ``(video_id, entity_id)``, so one linked face labels all its boxes in that video), -1 for persons
            no face row links to a known identity. ``'entity'``: the AVA person id made unique across
            videos, the index of ``(video_id, entity_id)`` in the sorted set of those pairs in ``ann_file``
            (stable for a given annotation file; ids of different annotation files are unrelated). Defaults
            to None: ``'face_file'`` when a face file is given, else ``'entity'``.
        on_bad_data (str): ``'raise'``: the first bad item raises an error naming the file and row (or the
            sample) and the field. ``'skip'``: bad rows, proposals and samples are left out and one warning per
            kind counts them (a keyframe without proposals gets mmaction's whole-frame proposal). Defaults to
            'raise'.
        check_frames (bool): Whether to check that the frames (or video files) of every sample exist; one
            folder listing per video, no decoding. Turn it off for frames on a non-local storage backend.
            Defaults to True.
        max_identities (int): Identities of the face file must be below this; the discriminator classifies
            ``max(identity) + 1`` of them. Defaults to 100000.
        face_tracker (dict): Arguments of the :class:`mmanon.apis.IoUTracker` that links the face file's
            per-frame rows into tubes. Defaults to ``dict(smoothing=0.)``: boxes as detected, a lost face kept
            for the tracker's ``max_age`` frames.
        **kwargs: The other arguments of :class:`mmaction.datasets.AVADataset` (``exclude_file``,
            ``label_file``, ``proposal_file``, ``data_prefix``, ``num_classes``, ``fps``, ...).
    """

    def __init__(self,
                 ann_file: str,
                 pipeline: List[dict],
                 face_file: Optional[str] = None,
                 identity_source: Optional[str] = None,
                 on_bad_data: str = 'raise',
                 check_frames: bool = True,
                 max_identities: int = MAX_IDENTITIES,
                 face_tracker: dict = dict(smoothing=0.),
                 **kwargs) -> None:
        if on_bad_data not in ('raise', 'skip'):
            raise ValueError(f"on_bad_data must be 'raise' or 'skip', got {on_bad_data!r}")
        if identity_source is None:
            identity_source = 'entity' if face_file is None else 'face_file'
        if identity_source not in ('face_file', 'entity'):
            raise ValueError(f"identity_source must be 'face_file', 'entity' or None, got {identity_source!r}")
        if identity_source == 'face_file' and face_file is None:
            raise ValueError("identity_source='face_file' needs a face_file")
        if not (isinstance(max_identities, int) and max_identities > 0):
            raise ValueError(f'max_identities must be a positive int, got {max_identities!r}')
        self.face_file = face_file
        self.identity_source = identity_source
        self.on_bad_data = on_bad_data
        self.check_frames = check_frames
        self.max_identities = max_identities
        self.face_tracker = dict(face_tracker)
        self._frame_faces: Dict[str, FrameFaces] = {}
        self._keyframe_faces: Dict[str, Dict[tuple, Tuple[np.ndarray, np.ndarray]]] = {}
        # mmaction's AVADataset unpickles the proposal file in full; it gets none and the safe loader reads it.
        proposal_file = kwargs.pop('proposal_file', None)
        super().__init__(ann_file, pipeline, **kwargs)
        self.proposal_file = proposal_file
        self.proposals = None if proposal_file is None else load_proposal_file(proposal_file, on_bad_data)

    def full_init(self) -> None:
        """Check that the face boxes can follow the pipeline, then load, validate and filter the data."""
        if not self._fully_initialized:
            self._check_pipeline()
        super().full_init()

    def _check_pipeline(self) -> None:
        """Raise if the face boxes could not follow the pipeline's geometry, or have nothing to attach to."""
        transforms = self.pipeline.transforms
        if not transforms or not isinstance(transforms[-1], PackActionInputs):
            last = transforms[-1] if transforms else None
            raise ValueError(f'AVAFaceDataset attaches the faces to the data sample that the last transform '
                             f'packs, so the pipeline must end with PackActionInputs; it ends with {last!r}')
        flipped_by = None
        for transform in transforms:
            if isinstance(transform, Fuse) or getattr(transform, 'lazy', False):
                raise ValueError(f'{transform!r} is lazy; AVA pipelines cannot be (mmaction moves the person '
                                 f'boxes only in non-lazy transforms), so AVAFaceDataset cannot follow them')
            if isinstance(transform, (ThreeCrop, TenCrop)):
                raise ValueError(f'{transform!r} makes several views of each clip; AVAFaceDataset moves the '
                                 f'faces into one view only')
            if isinstance(transform, RandomCrop) and flipped_by is not None:
                raise ValueError(f'{transform!r} comes after {flipped_by!r}; mmaction records crops in '
                                 f'crop_quadruple relative to the unflipped frame, so put Flip after every crop')
            if isinstance(transform, Flip):
                if flipped_by is not None:
                    raise ValueError(f'the pipeline flips twice ({flipped_by!r}, {transform!r}); mmaction '
                                     f'records one flip only')
                if transform.direction != 'horizontal':
                    raise ValueError(f'{transform!r} flips vertically; mmaction moves person boxes only '
                                     f'through horizontal flips')
                flipped_by = transform

    def load_data_list(self) -> List[dict]:
        """Read and validate the AVA CSV and the face CSV into one entry per keyframe."""
        bad_rows = BadItems(self.on_bad_data, ValueError, f'bad rows of {self.ann_file}')
        rows = []
        for row_number, line in enumerate(read_text_lines(self.ann_file), start=1):
            if not line.strip():
                continue
            try:
                key_and_box, label, entity_id = parse_ava_row(split_csv_line(line))
                if self.custom_classes is None and not 1 <= label < self.num_classes:
                    raise ValueError(f'action_id must be in [1, {self.num_classes - 1}] (num_classes is '
                                     f'{self.num_classes}), got {label}')
            except ValueError as e:
                bad_rows.add(f'{self.ann_file}, row {row_number}: {e}')
                continue
            rows.append((key_and_box, label, entity_id))
        bad_rows.warn()

        records_by_img = defaultdict(list)
        for key_and_box, label, entity_id in rows:
            if self.custom_classes is not None:
                if label not in self.custom_classes:
                    continue
                label = self.custom_classes.index(label)
            records_by_img[key_and_box.img_key].append(
                dict(entity_box=np.array(key_and_box.bbox), label=label, entity_id=entity_id))

        persons = sorted({(key_and_box.video_id, entity_id) for key_and_box, _, entity_id in rows})
        person_identity = {person: i for i, person in enumerate(persons)}
        faces_by_img = defaultdict(list)
        if self.face_file is not None:
            keyframes = {key_and_box.img_key for key_and_box, _, _ in rows}
            faces = load_face_file(self.face_file, self.on_bad_data, self._face_checker(keyframes))
            for face in faces:
                if face.is_keyframe:
                    faces_by_img[face.img_key].append(face)
            if self.identity_source == 'face_file':
                person_identity = self._linked_identities(faces)
            self._load_tubes(faces)

        shot_info = (0, (self.timestamp_end - self.timestamp_start) * self._FPS) if self.use_frames else None
        data_list = []
        for img_key, records in records_by_img.items():
            video_id, timestamp = img_key.split(',')
            bboxes, labels, entity_ids = self.parse_img_record(records)
            path = video_id if self.data_prefix['img'] is None else osp.join(self.data_prefix['img'], video_id)
            entry = dict(
                video_id=video_id,
                timestamp=int(timestamp),
                img_key=img_key,
                shot_info=shot_info,
                fps=self._FPS,
                ann=dict(gt_bboxes=bboxes, gt_labels=labels, entity_ids=entity_ids),
                gt_identities=np.array([person_identity.get((video_id, int(e)), -1) for e in entity_ids],
                                       dtype=np.int64))
            entry['frame_dir' if self.use_frames else 'filename'] = path
            if self.face_file is not None:
                keyframe_faces = faces_by_img.get(img_key, [])
                entry['gt_face_bboxes'] = np.array([f.bbox for f in keyframe_faces],
                                                   dtype=np.float32).reshape(-1, 4)
                entry['gt_face_identities'] = np.array([f.identity for f in keyframe_faces], dtype=np.int64)
                entry['gt_face_links'] = [_person(f) for f in keyframe_faces]
            data_list.append(entry)
        # The discriminator classifies the training identities; the adversarial hook checks its size.
        known = [i for entry in data_list for i in entry['gt_identities'].tolist() if i >= 0] + \
            [i for entry in data_list for i in entry.get('gt_face_identities', np.zeros(0)).tolist() if i >= 0]
        self._metainfo['num_identities'] = max(known) + 1 if known else 0
        return data_list

    def _face_checker(self, keyframes: Set[str]) -> Callable[[FaceRecord], None]:
        """Raises ``ValueError`` for a face row that does not fit the dataset: of a video that the AVA CSV does
        not annotate, at a whole-second timestamp that it does not annotate as a keyframe, or with an identity
        of ``max_identities`` or more."""
        video_ids = {key.split(',')[0] for key in keyframes}

        def check(face: FaceRecord) -> None:
            if face.video_id not in video_ids:
                raise ValueError(f'video_id {face.video_id!r} is not in the dataset')
            if face.is_keyframe and face.img_key not in keyframes:
                raise ValueError(f'timestamp {face.timestamp} of {face.video_id} is not an annotated keyframe of '
                                 f'{self.ann_file} (the rows of other frames have decimal timestamps)')
            if face.identity >= self.max_identities:
                raise ValueError(f'identity {face.identity} is not below max_identities={self.max_identities} '
                                 '(the discriminator classifies identities 0 .. max(identity)); number the '
                                 'identities 0 .. N-1, or raise max_identities')

        return check

    def _load_tubes(self, faces: List[FaceRecord]) -> None:
        """Link the faces of each video into tubes: its per-frame rows by the tracker, its keyframe faces by
        person."""
        by_video = defaultdict(list)
        for face in faces:
            by_video[face.video_id].append(face)
        for video_id, video_faces in by_video.items():
            keyframe_faces = [f for f in video_faces if f.is_keyframe]
            self._keyframe_faces[video_id] = link_keyframe_faces(
                np.array([f.timestamp for f in keyframe_faces]), np.array([f.bbox for f in keyframe_faces]),
                [_person(f) for f in keyframe_faces])
            if len(keyframe_faces) == len(video_faces):
                continue
            detections = defaultdict(list)
            for face in video_faces:
                detections[self._frame_index(face.timestamp)].append(face.bbox)
            self._frame_faces[video_id] = FrameFaces.link(
                {frame: np.array(boxes) for frame, boxes in detections.items()}, self.face_tracker)

    def _frame_index(self, timestamp: float) -> int:
        """The index of the frame shown at ``timestamp`` seconds, as ``SampleAVAFrames`` counts frames."""
        return int(round((timestamp - self.timestamp_start) * self._FPS)) + self.start_index

    def _face_tubes(self, video_id: str, timestamp: int, key_boxes: np.ndarray, links: List[Optional[tuple]],
                    frame_inds: np.ndarray) -> np.ndarray:
        """(K, T, 4) normalised boxes of the clip's faces in its sampled frames; see the class docstring."""
        frame_inds = np.asarray(frame_inds, np.int64).reshape(-1)
        seconds = self.timestamp_start + (frame_inds - self.start_index) / self._FPS
        tubes = np.full((len(key_boxes), len(frame_inds), 4), np.nan, np.float32)
        others = np.zeros((0, len(frame_inds), 4), np.float32)
        frame_faces = self._frame_faces.get(video_id)
        if frame_faces is not None:
            _, frame_tubes = frame_faces.tubes_at(np.append(frame_inds, self._frame_index(timestamp)))
            match = match_keyframe_faces(key_boxes, frame_tubes[:, -1])
            tubes[match >= 0] = frame_tubes[match[match >= 0], :-1]
            others = np.delete(frame_tubes[:, :-1], match[match >= 0], axis=0)
            others = others[~np.isnan(others[..., 0]).all(axis=1)]
        keyframe_faces = self._keyframe_faces.get(video_id, {})
        for tube, box, link in zip(tubes, key_boxes, links):
            missing = np.isnan(tube[:, 0])
            if missing.any():
                times, boxes = keyframe_faces.get(link, (np.array([timestamp]), box[None]))
                tube[missing] = interpolate_boxes(times, boxes, seconds[missing])
        return np.concatenate([tubes, others])

    def _linked_identities(self, faces: List[FaceRecord]) -> Dict[Tuple[str, int], int]:
        """The identity of each ``(video_id, entity_id)`` that a face row links to a known identity."""
        conflicts = BadItems(self.on_bad_data, ValueError, f'persons of {self.face_file} with two identities')
        links, conflicting = {}, set()
        for face in faces:
            if face.entity_id < 0 or face.identity < 0:
                continue
            person = (face.video_id, face.entity_id)
            linked = links.setdefault(person, face.identity)
            if linked != face.identity and person not in conflicting:
                conflicts.add(f'{self.face_file}: the face at {face.img_key} gives entity_id '
                              f'{face.entity_id} identity {face.identity}, an earlier face of that video gives it '
                              f'{linked}')
                conflicting.add(person)
        conflicts.warn()
        # A person with two identities gets neither: training on a guessed one would teach a wrong label.
        return {person: identity for person, identity in links.items() if person not in conflicting}

    def filter_data(self) -> List[dict]:
        """Drop the excluded keyframes (as AVADataset does), then the samples whose frames are missing; raise
        if no sample is left."""
        excluded = self._excluded_keys()
        data_list = [info for info in self.data_list if info['img_key'] not in excluded]
        print_log(f'{len(data_list)} out of {len(self.data_list)} frames are valid.', logger='current')
        not_excluded = len(data_list)
        if self.check_frames:
            data_list = self._with_frames(data_list)
        if not data_list:
            files = ' and '.join(filter(None, (self.ann_file, self.face_file)))
            reason = ('no row is usable' if not self.data_list else
                      f'{self.exclude_file} excludes all of them' if not not_excluded else 'none has its frames')
            raise DataFileError(f'AVAFaceDataset has no samples: {files} give {len(self.data_list)} keyframes and '
                                f'{reason} (the warnings above name the rows and samples left out)')
        return data_list

    def _excluded_keys(self) -> Set[str]:
        """The ``video_id,timestamp`` keys of the exclusion CSV (``video_id,timestamp`` rows)."""
        if self.exclude_file is None:
            return set()
        bad_rows = BadItems(self.on_bad_data, ValueError, f'bad rows of {self.exclude_file}')
        keys = set()
        for row_number, line in enumerate(read_text_lines(self.exclude_file), start=1):
            if not line.strip():
                continue
            try:
                row = split_csv_line(line)
                if len(row) != 2:
                    raise ValueError(f'expected 2 columns (video_id,timestamp), got {len(row)}')
                if not row[0].strip():
                    raise ValueError('video_id is empty')
                try:
                    keys.add(f'{row[0].strip()},{int(row[1]):04d}')
                except ValueError:
                    raise ValueError(f'timestamp must be an integer, got {row[1]!r}') from None
            except ValueError as e:
                bad_rows.add(f'{self.exclude_file}, row {row_number}: {e}')
        bad_rows.warn()
        return keys

    def _with_frames(self, data_list: List[dict]) -> List[dict]:
        """The samples whose frames (or video files) exist; the others are bad samples."""
        missing = BadItems(self.on_bad_data, FileNotFoundError, 'samples with missing frames')
        sampler = self._frame_sampler()
        samples_by_path = defaultdict(list)
        for info in data_list:
            samples_by_path[info['frame_dir' if self.use_frames else 'filename']].append(info)
        bad_keys = set()
        for path, samples in samples_by_path.items():
            if not self.use_frames:
                if not osp.isfile(path):
                    for info in samples:
                        missing.add(f'sample {info["img_key"]}: the video file {path} does not exist')
                        bad_keys.add(info['img_key'])
                continue
            listings: Dict[str, Optional[Set[str]]] = {}
            for info in samples:
                problem = self._missing_frame(path, self._frame_names(sampler, info), listings)
                if problem is not None:
                    missing.add(f'sample {info["img_key"]}: {problem}')
                    bad_keys.add(info['img_key'])
        missing.warn()
        return [info for info in data_list if info['img_key'] not in bad_keys]

    def _frame_sampler(self) -> SampleAVAFrames:
        """The pipeline's frame sampler; without one, a sampler of the keyframe alone."""
        return next((t for t in self.pipeline.transforms if isinstance(t, SampleAVAFrames)),
                    SampleAVAFrames(clip_len=1, frame_interval=1, test_mode=True))

    def _frame_names(self, sampler: SampleAVAFrames, info: dict) -> List[str]:
        """The file names of the frames that ``sampler`` may read for the sample ``info``.

        In training the sampler shifts each of its ``clip_len`` slots by a random offset; the lowest, zero
        and highest offsets give the first, centre and last frame each slot can read. The indices come from
        the sampler's own ``_get_clips``, so they are clipped to the shot exactly as the sampler clips them.
        """
        # SampleAVAFrames.transform's arithmetic, which adds start_index both before and after _get_clips.
        centre = self._FPS * (info['timestamp'] - self.timestamp_start) + self.start_index
        interval = sampler.frame_interval
        indices = set()
        for offset in {-interval // 2, 0, (interval + 1) // 2 - 1}:
            offsets = np.full(sampler.clip_len, offset)
            indices.update((sampler._get_clips(centre, offsets, info['shot_info']) + self.start_index).tolist())
        if self.modality == 'Flow':
            return [self.filename_tmpl.format(axis, i) for i in sorted(indices) for axis in ('x', 'y')]
        return [self.filename_tmpl.format(i) for i in sorted(indices)]

    @staticmethod
    def _missing_frame(frame_dir: str, names: List[str], listings: Dict[str, Optional[Set[str]]]) -> Optional[str]:
        """What is missing of ``names`` under ``frame_dir``, or None; ``listings`` caches folder listings."""

        def listing(folder):
            if folder not in listings:
                try:
                    with os.scandir(folder) as entries:
                        listings[folder] = {entry.name for entry in entries}
                except (FileNotFoundError, NotADirectoryError):
                    listings[folder] = None
            return listings[folder]

        top = listing(frame_dir)
        for name in names:
            # Checked in the frame folder first; a template may also name frames in subfolders.
            if top is not None and name in top:
                continue
            folder, base = osp.split(osp.join(frame_dir, name))
            if listing(folder) is None:
                return f'the frame folder {folder} does not exist'
            if base not in listings[folder]:
                return f'the frame {osp.join(folder, base)} is missing'
        return None

    def prepare_data(self, idx: int) -> Optional[dict]:
        """Run the pipeline and attach the identities and the faces, moved into the final clip.

        Args:
            idx (int): The sample index.

        Returns:
            dict | None: What the packing transform returns, its data sample completed; None when a transform
            returns None (mmengine then draws another sample).
        """
        results = self.get_data_info(idx)
        person_identities = results.pop('gt_identities')
        face_bboxes = results.pop('gt_face_bboxes', None)
        face_identities = results.pop('gt_face_identities', None)
        face_links = results.pop('gt_face_links', None)
        *transforms, pack = self.pipeline.transforms
        for transform in transforms:
            geometry = _recorded_geometry(results)
            results = transform(results)
            if results is None:
                return None
            if (not isinstance(transform, _GEOMETRY_TRANSFORMS) and geometry is not None
                    and _recorded_geometry(results) != geometry):
                known = ', '.join(t.__name__ for t in _GEOMETRY_TRANSFORMS)
                raise RuntimeError(f'{transform!r} changed the recorded frame geometry (img_shape, '
                                   f'crop_quadruple or flip) and AVAFaceDataset cannot follow it; resize, '
                                   f'crop and flip with mmaction2\'s {known} (or their subclasses)')
        if face_bboxes is not None:
            tubes = self._face_tubes(results['video_id'], results['timestamp'], face_bboxes, face_links,
                                     results['frame_inds'])
            geometry = (results.get('crop_quadruple', (0, 0, 1, 1)), results['img_shape'],
                        bool(results.get('flip', False)))
            face_bboxes = faces_in_clip(face_bboxes, *geometry)
            tubes = faces_in_clip(tubes.reshape(-1, 4), *geometry).reshape(tubes.shape)
        packed = pack(results)
        data_sample = packed['data_samples']
        data_sample.gt_instances.identities = torch.from_numpy(person_identities)
        if face_bboxes is not None:
            data_sample.gt_faces = InstanceData(
                bboxes=torch.from_numpy(face_bboxes), identities=torch.from_numpy(face_identities))
            data_sample.face_tubes = InstanceData(bboxes=torch.from_numpy(tubes))
        return packed

