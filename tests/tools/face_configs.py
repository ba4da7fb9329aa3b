"""Configs the analysis tools' tests run on, and a stand-in face-identity dataset."""
import os.path as osp

import numpy as np
import torch
from mmaction.structures import ActionDataSample
from torch.utils.data import Dataset

from mmanon.datasets.toy_ava import annotation_paths
from mmanon.registry import DATASETS

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


@DATASETS.register_module(name='StandInFaceIdentityDataset', force=True)
class StandInFaceIdentityDataset(Dataset):
    """Items as mmanon.FaceIdentityDataset gives them: a uint8 (3, H, W) face crop and its gt_label. Identity i
    is a plain square of its own colour (the same for every seed), under fresh noise per face (drawn from
    ``seed``)."""

    def __init__(self, num_identities=4, faces_per_identity=10, size=16, seed=0, pipeline=(), test_mode=False):
        self.test_mode = test_mode
        self.colours = np.random.default_rng(0).integers(30, 226, (num_identities, 3))
        rng = np.random.default_rng(seed + 1)
        self.items = []
        for identity in range(num_identities):
            for _ in range(faces_per_identity):
                crop = self.colours[identity][:, None, None] + rng.normal(0, 12, (3, size, size))
                self.items.append((torch.from_numpy(crop.clip(0, 255).astype(np.uint8)), identity))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        crop, identity = self.items[index]
        return dict(inputs=crop, data_samples=ActionDataSample().set_gt_label(identity))


def write_stand_in_faces_config(path):
    """A face-identity config of stand-in faces: training faces and, with other noise, validation faces."""
    path.write_text("default_scope = 'mmanon'\n"
                    "train_dataloader = dict(batch_size=16, dataset=dict(type='StandInFaceIdentityDataset', "
                    "pipeline=[]))\n"
                    "val_dataloader = dict(batch_size=16, dataset=dict(type='StandInFaceIdentityDataset', seed=1, "
                    "pipeline=[]))\n")
    return str(path)
