from mmanon.datasets.face_annotations import FaceRecord, dump_face_file, load_face_file

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

