"""The readers under every data file: encodings, line ends, over-long CSV fields, and proposal pickles that
would run code."""
import csv
import os.path as osp
import pickle

import numpy as np
import pytest

from mmanon.datasets.data_files import DataFileError, load_array_pickle, read_text_lines, split_csv_line

LINES = ['vidA,902,0.1,0.2,0.3,0.4,5,0', 'vidB,903,0.1,0.2,0.3,0.4,,']


@pytest.mark.parametrize('bom', [b'', b'\xef\xbb\xbf'])
@pytest.mark.parametrize('end', [b'\n', b'\r\n'])
def test_bom_and_crlf_are_accepted(tmp_path, bom, end):
    path = tmp_path / 'a.csv'
    path.write_bytes(bom + end.join(line.encode() for line in LINES) + end)
    assert read_text_lines(str(path)) == LINES
    path.write_bytes(bom + end.join(line.encode() for line in LINES))
    assert read_text_lines(str(path)) == LINES


@pytest.mark.parametrize('encoding, message', [
    ('latin-1', r'a.csv, row 2: not UTF-8 \(byte 0xe9 at offset \d+\); save the file as UTF-8'),
    ('utf-16', r'a.csv is UTF-16 or UTF-32 text .*not UTF-8'),
    ('utf-16-le', r'a.csv, row 1: the file holds NUL bytes, so it is not UTF-8 text'),
])
def test_other_encodings_are_named(tmp_path, encoding, message):
    path = tmp_path / 'a.csv'
    path.write_bytes('\n'.join([LINES[0], 'vidé,902,0.1,0.2,0.3,0.4,5,0', '']).encode(encoding))
    with pytest.raises(DataFileError, match=message):
        read_text_lines(str(path))


def test_overlong_csv_field_is_a_bad_row():
    assert split_csv_line('a,"b,c",d') == ['a', 'b,c', 'd']
    with pytest.raises(ValueError, match=r'not a readable CSV row \(field larger than field limit'):
        split_csv_line('vidA,' + 'x' * (csv.field_size_limit() + 1))
    with pytest.raises(ValueError, match='not a readable CSV row'):
        split_csv_line('vidA,"open quote')


class Payload:

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, 'w')


@pytest.mark.parametrize('protocol', [2, 4, 5])
def test_array_pickles_load_whatever_numpy_wrote(tmp_path, protocol):
    data = {'vid,0902': np.arange(10, dtype=np.float32).reshape(2, 5) / 10, 'scores': [np.float64(0.5), (1, 'x')],
            'objects': np.array([None, {'a': 1}], dtype=object)}
    path = tmp_path / 'p.pkl'
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = load_array_pickle(str(path))
    np.testing.assert_array_equal(loaded['vid,0902'], data['vid,0902'])
    assert loaded['scores'] == [0.5, (1, 'x')] and list(loaded['objects']) == [None, {'a': 1}]


@pytest.mark.parametrize('protocol', [2, 4])
def test_array_pickle_that_would_run_code_is_refused(tmp_path, protocol):
    marker = str(tmp_path / 'PWNED')
    path = tmp_path / 'p.pkl'
    path.write_bytes(pickle.dumps({'vid,0902': np.zeros((1, 5)), 'x': Payload(marker)}, protocol=protocol))
    with pytest.raises(DataFileError, match=r'p.pkl needs (builtins|io).open to be unpickled; a data file of arrays '
                       'never does, and unpickling it could run code'):
        load_array_pickle(str(path))
    assert not osp.exists(marker)
    path.write_bytes(b'not a pickle')
    with pytest.raises(DataFileError, match='p.pkl is not a readable pickle'):
        load_array_pickle(str(path))
