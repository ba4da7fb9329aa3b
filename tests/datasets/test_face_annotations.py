import pytest

from mmanon.datasets.face_annotations import FaceFileError, FaceRecord, dump_face_file, load_face_file

RECORDS = [
    FaceRecord('vidA', 902, (0.125, 0.25, 0.375, 0.5), identity=3, entity_id=0),
    FaceRecord('vidA', 902, (0.5, 0.0, 1.0, 0.75), identity=-1, entity_id=1),
    FaceRecord('vidB', 1798, (0.001, 0.002, 0.999, 0.998), identity=12, entity_id=-1),
    FaceRecord('vidB', 903, (0.0, 0.0, 1.0, 1.0)),
]


def test_dump_then_load_round_trips(tmp_path):
    first, second = tmp_path / 'first.csv', tmp_path / 'second.csv'
    dump_face_file(str(first), RECORDS)
    loaded = load_face_file(str(first))
    assert loaded == RECORDS
    dump_face_file(str(second), loaded)
    assert second.read_bytes() == first.read_bytes()


def test_unknown_identity_and_entity_may_be_empty_or_absent(tmp_path):
    path = tmp_path / 'faces.csv'
    path.write_text('vidA,902,0.1,0.2,0.3,0.4,,\n'
                    'vidA,902,0.5,0.2,0.7,0.4,5\n'
                    '\n'
                    'vidA,903,0.1,0.2,0.3,0.4,-1,\n')
    records = load_face_file(str(path))
    assert [(r.identity, r.entity_id) for r in records] == [(-1, -1), (5, -1), (-1, -1)]
    dump_face_file(str(tmp_path / 'again.csv'), records)
    assert load_face_file(str(tmp_path / 'again.csv')) == records



def test_frames_have_decimal_timestamps(tmp_path):
    path = tmp_path / 'faces.csv'
    path.write_text('vidA,902.0333,0.1,0.2,0.3,0.4,,\n'
                    'vidA,0902,0.1,0.2,0.3,0.4,5,0\n'
                    'vidA,903.0000,0.1,0.2,0.3,0.4,5,0\n')
    frame, key, whole_second = load_face_file(str(path))
    assert frame.timestamp == 902.0333 and not frame.is_keyframe
    assert (key.timestamp, key.is_keyframe, key.img_key) == (902, True, 'vidA,0902')
    # Written with a decimal point, a whole second is a frame's row, not a keyframe's.
    assert (whole_second.timestamp, whole_second.is_keyframe, whole_second.img_key) == (903, False, 'vidA,903.0000')
    # Frames of 30 fps are told apart after a round trip, whole seconds included.
    records = [FaceRecord('vidA', 900 + i / 30, (0.1, 0.2, 0.3, 0.4)) for i in range(1, 90)]
    records.append(FaceRecord('vidA', 902, (0.1, 0.2, 0.3, 0.4)))
    dump_face_file(str(path), records)
    loaded = load_face_file(str(path))
    assert [round((r.timestamp - 900) * 30) for r in loaded[:-1]] == list(range(1, 90))
    assert [r.is_keyframe for r in loaded] == [False] * 89 + [True]
    assert 'vidA,901.0000,' in path.read_text() and 'vidA,902,' in path.read_text()


@pytest.mark.parametrize('timestamp, reason', [('abc', "must be a number of seconds, got 'abc'"),
                                               ('-0.5', 'must be a non-negative number of seconds, got -0.5'),
                                               ('nan', 'must be a non-negative number of seconds, got nan')])
def test_bad_timestamps_name_the_row(tmp_path, timestamp, reason):
    path = tmp_path / 'faces.csv'
    path.write_text(f'vidA,902,0.1,0.2,0.3,0.4,5\nvidA,{timestamp},0.1,0.2,0.3,0.4,5\n')
    with pytest.raises(FaceFileError, match=rf'faces.csv, row 2: timestamp {reason}'):
        load_face_file(str(path))
