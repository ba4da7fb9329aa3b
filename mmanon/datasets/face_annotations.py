"""The face annotation file that sits beside AVA's annotation CSVs.

One face per row, no header, like AVA's own CSVs::

    video_id,timestamp,x1,y1,x2,y2,identity[,entity_id]

Coordinates are normalised to [0, 1] by the frame width and height; ``identity`` is a non-negative integer
shared by every appearance of the same person (across videos and splits), or empty / -1 when unknown;
``entity_id`` is the AVA person id of the annotated person box the face belongs to (empty / -1 if none).

``timestamp`` is the second of the face's frame. An integer, as in AVA, is a keyframe: the keyframe rows give
each sample its faces and identities. A decimal number is any frame, ``timestamp_start + (i - start_index) /
fps`` for frame ``i`` of the video, written with a decimal point even at a whole second (``902.0333`` is the
frame after keyframe 902 at 30 fps, ``903.0000`` the frame of second 903 when that is not an annotated
keyframe; four decimals tell frames apart up to 5000 fps). The rows of frames (written by
``tools/data/detect_faces.py --all-frames``) follow each face through the clip, see
:mod:`mmanon.datasets.face_tubes`. A file of keyframe rows only is the original format.
"""
import logging
import math
import numbers
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Tuple, Union

from mmengine.logging import print_log

from .data_files import BadItems, DataFileError, read_text_lines, split_csv_line


class FaceFileError(DataFileError):
    """A face annotation file has a row that cannot be used, or cannot be read; the message names the file and,
    where there is one, the row and field."""


@dataclass(frozen=True)
class FaceRecord:
    """One face of one frame.

    Args:
        video_id (str): The AVA video id.
        timestamp (int | float): The frame's second: an int for a keyframe, as in AVA, a float for any
            frame (per-frame rows).
        bbox (tuple[float]): (x1, y1, x2, y2), normalised to [0, 1].
        identity (int): Identity label, -1 if unknown. Defaults to -1.
        entity_id (int): AVA person id of the person box holding the face, -1 if none. Defaults to -1.
    """
    video_id: str
    timestamp: Union[int, float]
    bbox: Tuple[float, float, float, float]
    identity: int = -1
    entity_id: int = -1

    @property
    def is_keyframe(self) -> bool:
        """Whether the row is a keyframe's (an integer timestamp) rather than any frame's (a float)."""
        return isinstance(self.timestamp, numbers.Integral)

    @property
    def img_key(self) -> str:
        """The ``video_id,timestamp`` key that AVA datasets and proposal files use for keyframes (a non-key
        frame's key, with its decimal timestamp, is one no keyframe has)."""
        if not self.is_keyframe:
            return f'{self.video_id},{self.timestamp:.4f}'
        return f'{self.video_id},{self.timestamp:04d}'


def _optional_int(text: str, field: str) -> int:
    text = text.strip()
    if text == '':
        return -1
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f'{field} must be an integer (or empty for unknown), got {text!r}') from None
    if value < -1:
        raise ValueError(f'{field} must be >= -1 (or empty for unknown), got {value}')
    return value


def _timestamp(text: str) -> Union[int, float]:
    """A keyframe's second (an int, written as an integer) or any frame's (a float, written as a decimal)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f'timestamp must be a number of seconds, got {text!r}') from None
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f'timestamp must be a non-negative number of seconds, got {text.strip()}')
    return value


def parse_face_row(row: List[str]) -> FaceRecord:
    """Parse one CSV row; raises ``ValueError`` naming the offending field."""
    if len(row) not in (7, 8):
        raise ValueError(f'expected 7 or 8 columns (video_id,timestamp,x1,y1,x2,y2,identity[,entity_id]), '
                         f'got {len(row)}')
    video_id = row[0].strip()
    if not video_id:
        raise ValueError('video_id is empty')
    timestamp = _timestamp(row[1])
    coords = []
    for name, text in zip(('x1', 'y1', 'x2', 'y2'), row[2:6]):
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f'{name} must be a number, got {text!r}') from None
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f'{name} must be a normalised coordinate in [0, 1], got {text.strip()}')
        coords.append(value)
    if not (coords[0] < coords[2] and coords[1] < coords[3]):
        raise ValueError(f'the box must have x1 < x2 and y1 < y2, got {tuple(coords)}')
    identity = _optional_int(row[6], 'identity')
    entity_id = _optional_int(row[7], 'entity_id') if len(row) == 8 else -1
    return FaceRecord(video_id, timestamp, tuple(coords), identity, entity_id)


def load_face_file(path: str,
                   on_error: str = 'raise',
                   check_record: Optional[Callable[[FaceRecord], None]] = None) -> List[FaceRecord]:
    """Read and validate a face annotation file.

    The file must be UTF-8 (a byte-order mark and CRLF line ends are accepted); another encoding raises a
    :class:`FaceFileError` whatever ``on_error`` says. A row repeated exactly is dropped, and one warning counts
    the repeats; a row with the video, timestamp and box of an earlier row but another identity or entity id
    is a bad row.

    Args:
        path (str): The CSV file.
        on_error (str): ``'raise'`` stops at the first bad row with a :class:`FaceFileError` naming file,
            row and field; ``'skip'`` leaves bad rows out and logs one warning with their count and the first
            problem. Defaults to 'raise'.
        check_record (callable, optional): Raises ``ValueError`` for a parsed row that does not fit the
            dataset (an unknown video, a timestamp that is not a keyframe); such rows are bad rows. Defaults to
            None (not checked).

    Returns:
        list[FaceRecord]: The valid rows, in file order, without repeats.
    """
    if on_error not in ('raise', 'skip'):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    try:
        lines = read_text_lines(path)
    except DataFileError as e:
        raise FaceFileError(str(e)) from None
    bad_rows = BadItems(on_error, FaceFileError, f'bad rows of {path}')
    records, first_rows, repeats = [], {}, []
    for row_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = split_csv_line(line)
            if all(not cell.strip() for cell in row):
                continue
            record = parse_face_row(row)
            if check_record is not None:
                check_record(record)
            face = (record.img_key, record.bbox)
            if face in first_rows:
                first_row, first = first_rows[face]
                if first != record:
                    raise ValueError(f'the face at {record.img_key} with box {record.bbox} has identity '
                                     f'{record.identity} and entity_id {record.entity_id} here, {first.identity} '
                                     f'and {first.entity_id} in row {first_row}')
                repeats.append(f'row {row_number} repeats row {first_row}')
                continue
        except ValueError as e:
            bad_rows.add(f'{path}, row {row_number}: {e}')
            continue
        first_rows[face] = (row_number, record)
        records.append(record)
    bad_rows.warn()
    if repeats:
        print_log(f'dropped {len(repeats)} repeated rows of {path}; first: {repeats[0]}', logger='current',
                  level=logging.WARNING)
    return records


def dump_face_file(path: str, records: Iterable[FaceRecord]) -> None:
    """Write records in the face annotation format (3 decimals, like AVA's CSVs).

    Args:
        path (str): The CSV file to write.
        records (Iterable[FaceRecord]): The faces, written in the given order.
    """
    with open(path, 'w', encoding='utf-8', newline='\n') as f:
        for r in records:
            coords = ','.join(f'{v:.3f}' for v in r.bbox)
            timestamp = r.timestamp if r.is_keyframe else f'{r.timestamp:.4f}'
            f.write(f'{r.video_id},{timestamp},{coords},{r.identity},{r.entity_id}\n')
