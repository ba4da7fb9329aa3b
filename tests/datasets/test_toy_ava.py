import os
import os.path as osp

from mmanon.datasets.toy_ava import annotation_paths, generate_toy_ava, spec_from_preset


def _annotation_bytes(out_dir):
    """The bytes of every CSV, pbtxt and proposal pickle the generator wrote."""
    folder = osp.dirname(annotation_paths(out_dir)['label_file'])
    return {name: open(osp.join(folder, name), 'rb').read() for name in sorted(os.listdir(folder))}


def test_generator_is_deterministic(tmp_path):
    spec = spec_from_preset('fixture')
    runs = [str(tmp_path / name) for name in ('a', 'b', 'other_seed')]
    generate_toy_ava(runs[0], spec, render=False)
    generate_toy_ava(runs[1], spec, render=False)
    generate_toy_ava(runs[2], spec_from_preset('fixture', seed=spec.seed + 1), render=False)
    first, second, other = map(_annotation_bytes, runs)
    assert {osp.splitext(name)[1] for name in first} == {'.csv', '.pbtxt', '.pkl'}
    assert len(first) == 9
    assert first == second
    assert not osp.exists(annotation_paths(runs[0])['data_root'])
    # Another seed changes the boxes, faces and proposals (the label map and the file names stay).
    changed = {name for name in first if first[name] != other[name]}
    assert set(first) == set(other)
    assert {'ava_train_v2.1.csv', 'ava_faces_train_v2.1.csv', 'ava_dense_proposals_train.FAIR.recall_93.9.pkl'} \
        <= changed
