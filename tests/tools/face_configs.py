"""Configs the analysis tools' tests run on."""
import os.path as osp

from mmanon.datasets.toy_ava import annotation_paths

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SMOKE = osp.join(REPO, 'configs', 'detection', 'slowonly', 'slowonly_r18-smoke_1xb2-4x2x1-4i_ava-fixture-rgb.py')


def write_face_config(path, data_dir='data/ava_fixture', anonymizer='IdentityAnonymizer', **anonymizer_args):
    """The smoke config made face-aware, as the analysis tools need it: AVAFaceDataset with the face files of
    ``data_dir`` (a generated toy benchmark) and an AnonymizerDataPreprocessor with the given anonymizer."""
    paths = annotation_paths(str(data_dir))
    datasets = {
        split: dict(type='mmanon.AVAFaceDataset', ann_file=paths[f'ann_file_{split}'],
                    exclude_file=paths[f'exclude_file_{split}'], proposal_file=paths[f'proposal_file_{split}'],
                    face_file=paths[f'face_file_{split}'], label_file=paths['label_file'],
                    data_prefix=dict(img=paths['data_root']))
        for split in ('train', 'val')
    }
    evaluator = dict(ann_file=paths['ann_file_val'], exclude_file=paths['exclude_file_val'],
                     label_file=paths['label_file'])
    preprocessor = dict(type='mmanon.AnonymizerDataPreprocessor', anonymizer=dict(type=anonymizer, **anonymizer_args),
                        face_crop_size=(32, 32))
    path.write_text(f'_base_ = {SMOKE!r}\n'
                    f'model = dict(data_preprocessor={preprocessor!r})\n'
                    f'train_dataloader = dict(dataset={datasets["train"]!r})\n'
                    f'val_dataloader = dict(dataset={datasets["val"]!r})\n'
                    'test_dataloader = val_dataloader\n'
                    f'val_evaluator = {evaluator!r}\n'
                    'test_evaluator = val_evaluator\n')
    return str(path)
