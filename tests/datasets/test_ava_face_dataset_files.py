"""AVAFaceDataset's files as other tools and hands write them, and as an attacker would: each becomes a clear
error naming the file and row, or a counted skip under on_bad_data='skip'; never a silently wrong dataset, never
code run from a proposal file."""
import os.path as osp
import pickle

import numpy as np
import pytest
from mmaction.registry import DATASETS as MMACTION_DATASETS
from mmengine.registry import DefaultScope

from mmanon.datasets.data_files import DataFileError
from mmanon.datasets.face_annotations import FaceFileError, load_face_file
from mmanon.datasets.toy_ava import PRESETS, generate_toy_ava

PIPELINE = [
    dict(type='SampleAVAFrames', clip_len=4, frame_interval=2, test_mode=True),
    dict(type='RawFrameDecode'),
    dict(type='Resize', scale=(-1, 64)),
    dict(type='FormatShape', input_format='NCTHW', collapse=True),
    dict(type='PackActionInputs'),
]


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    paths = generate_toy_ava(str(tmp_path_factory.mktemp('toy_ava')), PRESETS['fixture'])
    cfg = dict(ann_file=paths['ann_file_train'], exclude_file=paths['exclude_file_train'],
               label_file=paths['label_file'], proposal_file=paths['proposal_file_train'],
               data_prefix=dict(img=paths['data_root']), num_classes=6, face_file=paths['face_file_train'],
               pipeline=PIPELINE, test_mode=True)
    return cfg


def build(**cfg):
    """Build through mmaction's registry in its scope, as a stock AVA config does."""
    with DefaultScope.overwrite_default_scope('mmaction'):
        return MMACTION_DATASETS.build(dict(type='mmanon.AVAFaceDataset', **cfg))


def faces_by_key(dataset):
    return {dataset.get_data_info(i)['img_key']: (dataset.get_data_info(i)['gt_face_bboxes'].tolist(),
                                                  dataset.get_data_info(i)['gt_face_identities'].tolist())
            for i in range(len(dataset))}


def rewrite(source, target, lines=None, append=(), encoding='utf-8', end='\n', bom=b''):
    """``target``: the lines of ``source`` (or ``lines``) plus ``append``, encoded and ended as asked."""
    if lines is None:
        with open(source, encoding='utf-8') as f:
            lines = f.read().splitlines()
    with open(target, 'wb') as f:
        f.write(bom + ''.join(line + end for line in [*lines, *append]).encode(encoding))
    return str(target)


def skipped(warnings, what):
    return [w for w in warnings if w.startswith('skipped') and what in w]


# --- Encodings and line ends ------------------------------------------------------------------------------


def test_bom_and_crlf_read_like_the_plain_files(toy, tmp_path):
    reference = faces_by_key(build(**toy))
    ann = rewrite(toy['ann_file'], tmp_path / 'ann.csv', end='\r\n', bom=b'\xef\xbb\xbf')
    faces = rewrite(toy['face_file'], tmp_path / 'faces.csv', end='\r\n', bom=b'\xef\xbb\xbf')
    assert faces_by_key(build(**dict(toy, ann_file=ann, face_file=faces))) == reference
    assert load_face_file(faces) == load_face_file(toy['face_file'])


def test_bom_in_the_exclusion_file_still_excludes_its_first_row(toy, tmp_path):
    exclude = rewrite(None, tmp_path / 'excluded.csv', ['toytrain0000,0902'], bom=b'\xef\xbb\xbf', end='\r\n')
    keys = set(faces_by_key(build(**dict(toy, exclude_file=exclude))))
    assert 'toytrain0000,0902' not in keys and len(keys) == len(faces_by_key(build(**toy))) - 1


@pytest.mark.parametrize('which', ['ann_file', 'face_file', 'exclude_file'])
@pytest.mark.parametrize('encoding, message', [('latin-1', r', row 9: not UTF-8 \(byte 0xe9'),
                                               ('utf-16', ' is UTF-16 or UTF-32 text')])
def test_other_encodings_are_refused_even_under_skip(toy, tmp_path, which, encoding, message):
    """Eight good rows, then one with an accented video id."""
    if which == 'exclude_file':
        lines = ['toytrain0000,0902'] * 8 + ['toytrainé,0902']
    else:
        lines = open(toy[which], encoding='utf-8').read().splitlines() + ['toytrainé,902,0.1,0.1,0.2,0.2,1,0']
    path = rewrite(None, tmp_path / 'file.csv', lines, encoding=encoding)
    for on_bad_data in ('raise', 'skip'):
        with pytest.raises(DataFileError, match='file.csv' + message):
            build(**dict(toy, on_bad_data=on_bad_data, **{which: path}))


@pytest.mark.parametrize('which', ['ann_file', 'face_file'])
def test_overlong_field_is_a_bad_row(toy, tmp_path, which, logged_warnings):
    path = rewrite(toy[which], tmp_path / 'file.csv', append=['toytrain0000,902,' + 'x' * 200000 + ',0.2,0.3,0.4,1,0'])
    with pytest.raises(ValueError, match=r'file.csv, row 9: not a readable CSV row \(field larger than field limit'):
        build(**dict(toy, **{which: path}))
    assert len(build(**dict(toy, on_bad_data='skip', **{which: path}))) == len(build(**toy))
    assert len(skipped(logged_warnings, 'bad rows of')) == 1


# --- Face rows that do not fit the dataset ------------------------------------------------------------------


def test_face_row_at_a_timestamp_that_is_not_a_keyframe_is_counted(toy, tmp_path, logged_warnings):
    faces = rewrite(toy['face_file'], tmp_path / 'faces.csv', append=['toytrain0000,905,0.1,0.1,0.2,0.2,0,0'])
    with pytest.raises(FaceFileError, match=r'faces.csv, row 9: timestamp 905 of toytrain0000 is not an annotated '
                       r'keyframe of .*ava_train_v2.1.csv'):
        build(**dict(toy, face_file=faces))
    assert faces_by_key(build(**dict(toy, face_file=faces, on_bad_data='skip'))) == faces_by_key(build(**toy))
    assert len(skipped(logged_warnings, 'skipped 1 bad rows of')) == 1


def test_repeated_face_rows_are_dropped_and_counted(toy, tmp_path, logged_warnings):
    with open(toy['face_file'], encoding='utf-8') as f:
        lines = f.read().splitlines()
    faces = rewrite(None, tmp_path / 'faces.csv', lines + lines + [lines[0].replace('0.349', '0.3490')])
    assert faces_by_key(build(**dict(toy, face_file=faces))) == faces_by_key(build(**toy))
    assert any(w.startswith(f'dropped {len(lines) + 1} repeated rows of {faces}; first: row 9 repeats row 1')
               for w in logged_warnings), logged_warnings
    # The same face with another identity is not a repeat but a contradiction.
    other = lines[0].rsplit(',', 2)[0] + ',7,0'
    faces = rewrite(None, tmp_path / 'faces.csv', lines + [other])
    with pytest.raises(FaceFileError, match=r'faces.csv, row 9: the face at toytrain0000,0902 with box .* has '
                       r'identity 7 and entity_id 0 here, 0 and 0 in row 1'):
        build(**dict(toy, face_file=faces))


def test_absurd_identity_is_bounded(toy, tmp_path, logged_warnings):
    faces = rewrite(toy['face_file'], tmp_path / 'faces.csv', append=['toytrain0000,902,0.1,0.1,0.2,0.2,99999999,'])
    with pytest.raises(FaceFileError, match=r'faces.csv, row 9: identity 99999999 is not below '
                       r'max_identities=100000'):
        build(**dict(toy, face_file=faces))
    dataset = build(**dict(toy, face_file=faces, on_bad_data='skip'))
    assert dataset.metainfo['num_identities'] == build(**toy).metainfo['num_identities'] == 3
    assert len(skipped(logged_warnings, 'skipped 1 bad rows of')) == 1
    assert build(**dict(toy, face_file=faces, max_identities=10**8)).metainfo['num_identities'] == 10**8
    with pytest.raises(ValueError, match='max_identities must be a positive int'):
        build(**dict(toy, max_identities=0))


def test_dataset_left_empty_names_its_files(toy, tmp_path):
    ann = rewrite(None, tmp_path / 'ann.csv', ['toytrain0000,902,0.1,0.1,0.5', 'nonsense'])
    with pytest.raises(DataFileError, match=r'AVAFaceDataset has no samples: .*ann.csv and .*faces_train.* give 0 '
                       r'keyframes and no row is usable'):
        build(**dict(toy, ann_file=ann, on_bad_data='skip'))
    exclude = rewrite(None, tmp_path / 'excluded.csv', ['toytrain0000,902', 'toytrain0000,903', 'toytrain0001,902',
                                                       'toytrain0001,903'])
    with pytest.raises(DataFileError, match=r'give 4 keyframes and .*excluded.csv excludes all of them'):
        build(**dict(toy, exclude_file=exclude))


# --- Proposal files -----------------------------------------------------------------------------------------


class Payload:

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, 'w')


def test_proposal_pickle_that_would_run_code_is_refused(toy, tmp_path):
    marker = str(tmp_path / 'PWNED')
    with open(toy['proposal_file'], 'rb') as f:
        proposals = pickle.load(f)
    proposals['toytrain0000,0902'] = Payload(marker)
    crafted = tmp_path / 'proposals.pkl'
    crafted.write_bytes(pickle.dumps(proposals))
    for on_bad_data in ('raise', 'skip'):
        with pytest.raises(DataFileError, match=r'proposals.pkl needs (builtins|io).open to be unpickled'):
            build(**dict(toy, proposal_file=str(crafted), on_bad_data=on_bad_data))
    assert not osp.exists(marker)


def test_proposals_are_loaded_and_validated(toy, tmp_path, logged_warnings):
    with open(toy['proposal_file'], 'rb') as f:
        proposals = pickle.load(f)
    dataset = build(**toy)
    info = dataset.get_data_info(0)
    np.testing.assert_array_equal(dataset.proposals[info['img_key']], proposals[info['img_key']])
    assert info['proposals'].shape[1] == 4
    proposals['toytrain0000,0903'] = proposals['toytrain0000,0903'] * 640  # pixels, not normalised
    bad = tmp_path / 'proposals.pkl'
    bad.write_bytes(pickle.dumps(proposals))
    with pytest.raises(DataFileError, match=r"proposals.pkl, key 'toytrain0000,0903': proposal boxes must be "
                       r'normalised to \[0, 1\]'):
        build(**dict(toy, proposal_file=str(bad)))
    dataset = build(**dict(toy, proposal_file=str(bad), on_bad_data='skip'))
    assert 'toytrain0000,0903' not in dataset.proposals and len(skipped(logged_warnings, 'bad proposals of')) == 1
    bad.write_bytes(pickle.dumps([proposals]))
    with pytest.raises(DataFileError, match=r'proposals.pkl must hold a dict'):
        build(**dict(toy, proposal_file=str(bad), on_bad_data='skip'))


def test_malformed_exclusion_rows_are_named_or_counted(toy, tmp_path, logged_warnings):
    exclude = rewrite(None, tmp_path / 'excluded.csv', ['toytrain0000,0902', 'toytrain0000,09o3', ',0903',
                                                       'toytrain0001,0902,extra'])
    with pytest.raises(ValueError, match=r"excluded.csv, row 2: timestamp must be an integer, got '09o3'"):
        build(**dict(toy, exclude_file=exclude))
    keys = set(faces_by_key(build(**dict(toy, exclude_file=exclude, on_bad_data='skip'))))
    assert keys == set(faces_by_key(build(**toy))) - {'toytrain0000,0902'}
    assert any(w.startswith('skipped 3 bad rows of') for w in logged_warnings), logged_warnings
