"""Reading the text and data files of the datasets so that a bad file is named, never half-read.

Annotation files come from many tools: spreadsheets add a UTF-8 byte-order mark and CRLF line ends (both
accepted), editors save Latin-1 or UTF-16 (refused with the file and row, under every ``on_bad_data``: the
file as a whole cannot be read), and a broken export can hold fields longer than Python's csv module takes
(a bad row). Proposal pickles are unpickled with an allow-list of numpy's array classes only.
"""
import codecs
import csv
import io
import logging
import pickle
from typing import List

from mmengine.fileio import get
from mmengine.logging import print_log


class DataFileError(ValueError):
    """A data file cannot be read as a whole; the message names the file."""


class BadItems:
    """Raises on the first bad item, or collects them for one warning, as ``on_bad_data`` says.

    Args:
        on_bad_data (str): 'raise' or 'skip'.
        error (type): The exception raised under 'raise'.
        what (str): What the items are, for the warning ("bad rows of ann.csv").
    """

    def __init__(self, on_bad_data: str, error: type, what: str):
        self.on_bad_data = on_bad_data
        self.error = error
        self.what = what
        self.messages: List[str] = []

    def add(self, message: str) -> None:
        if self.on_bad_data == 'raise':
            raise self.error(message)
        self.messages.append(message)

    def warn(self) -> None:
        if self.messages:
            print_log(f'skipped {len(self.messages)} {self.what} (on_bad_data="skip"); first: {self.messages[0]}',
                      logger='current', level=logging.WARNING)


def _row_of(data: bytes, offset: int) -> int:
    return data.count(b'\n', 0, offset) + 1


def read_text_lines(path: str) -> List[str]:
    """The lines of a UTF-8 text file (any mmengine storage backend), without a UTF-8 byte-order mark and
    without their ``\\n`` or ``\\r\\n`` ends; line ``i`` of the file is item ``i - 1``.

    Args:
        path (str): The file.

    Returns:
        list[str]: The lines; a final line end adds no empty line.

    Raises:
        DataFileError: If the file is UTF-16/32 or otherwise not UTF-8 text, naming the row.
    """
    data = get(path)
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataFileError(f'{path} is UTF-16 or UTF-32 text (it starts with that byte-order mark), not UTF-8; '
                            'save it as UTF-8 (e.g. iconv -f utf-16 -t utf-8)')
    data = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data
    nul = data.find(b'\0')
    if nul >= 0:
        raise DataFileError(f'{path}, row {_row_of(data, nul)}: the file holds NUL bytes, so it is not UTF-8 text '
                            '(UTF-16 without a byte-order mark, or binary); save it as UTF-8')
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError as e:
        raise DataFileError(f'{path}, row {_row_of(data, e.start)}: not UTF-8 (byte 0x{data[e.start]:02x} at '
                            f'offset {e.start}); save the file as UTF-8, e.g. iconv -f latin1 -t utf-8 if it is '
                            'Latin-1') from None
    lines = text.split('\n')
    if lines[-1] == '':
        lines.pop()
    return [line[:-1] if line.endswith('\r') else line for line in lines]


def split_csv_line(line: str) -> List[str]:
    """The cells of one CSV line; raises ``ValueError`` where Python's csv module cannot read it (a field
    longer than ``csv.field_size_limit()``, a NUL, a quote left open)."""
    try:
        return next(csv.reader([line], strict=True), [])
    except csv.Error as e:
        raise ValueError(f'not a readable CSV row ({e})') from None


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a class or function outside the allow-list."""


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles containers, numbers, strings and numpy arrays; any other class or function is refused,
    so a crafted file cannot run code."""

    # numpy moved its internals from numpy.core to numpy._core in 2.0; pickles name either.
    ALLOWED = {(f'numpy.{core}.{module}', name)
               for core in ('core', '_core')
               for module, name in (('multiarray', '_reconstruct'), ('multiarray', 'scalar'),
                                    ('numeric', '_frombuffer'))}
    # Protocol 2 writes bytes (an array's data) as _codecs.encode(text, 'latin1'), as torch's allow-list knows.
    ALLOWED |= {('numpy', 'ndarray'), ('numpy', 'dtype'), ('collections', 'OrderedDict'), ('_codecs', 'encode')}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise _RefusedGlobal(f'{module}.{name}')


def load_array_pickle(path: str):
    """Unpickle a data file of dicts, lists, tuples, numbers, strings and numpy arrays, and nothing else.

    Args:
        path (str): The pickle file (any mmengine storage backend).

    Returns:
        The unpickled object.

    Raises:
        DataFileError: If the file needs another class or function (it could run code), or is not a
            readable pickle.
    """
    try:
        return _ArrayUnpickler(io.BytesIO(get(path))).load()
    except _RefusedGlobal as e:
        raise DataFileError(f'{path} needs {e} to be unpickled; a data file of arrays never does, and unpickling '
                            'it could run code. Save the data as dicts, lists and numpy arrays only') from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError) as e:
        raise DataFileError(f'{path} is not a readable pickle ({type(e).__name__}: {e})') from None
