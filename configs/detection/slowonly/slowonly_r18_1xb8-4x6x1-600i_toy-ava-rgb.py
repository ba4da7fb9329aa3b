# The stock SlowOnly AVA 2.1 detector, shrunk to a half-width ResNet-18 with temporal kernels throughout, trained
# from scratch on the generated toy benchmark
#   python tools/data/make_toy_ava.py data/toy_ava
# This is the raw reference of the main job (tools/run_toy.sh): its preprocessor anonymizes with the identity,
# so the detector's input is bit-identical to the stock preprocessor's, and the privacy metrics see raw faces.
_base_ = 'mmaction::detection/slowonly/slowonly_kinetics400-pretrained-r50_8xb16-4x16x1-20e_ava21-rgb.py'

custom_imports = dict(imports=['mmanon'], allow_failed_imports=False)

model = dict(
    init_cfg=None,
    # Trained from scratch on little data, the toy's motion cues (limbs and heads moving a few pixels) are only
    # learned with temporal kernels from the first layer on, as in SlowOnly's fast-pathway counterpart.
    backbone=dict(depth=18, base_channels=32, conv1_kernel=(3, 7, 7), inflate=(1, 1, 1, 1)),
    roi_head=dict(bbox_head=dict(in_channels=256, num_classes=6, topk=(1, 3))),
    data_preprocessor=dict(
        type='mmanon.AnonymizerDataPreprocessor',
        anonymizer=dict(type='IdentityAnonymizer'),
        face_crop_size=(32, 32)))

data_root = 'data/toy_ava/rawframes'
anno_root = 'data/toy_ava/annotations'
ann_file_train = f'{anno_root}/ava_train_v2.1.csv'
ann_file_val = f'{anno_root}/ava_val_v2.1.csv'
exclude_file_train = f'{anno_root}/ava_train_excluded_timestamps_v2.1.csv'
exclude_file_val = f'{anno_root}/ava_val_excluded_timestamps_v2.1.csv'
label_file = f'{anno_root}/ava_action_list_v2.1_for_activitynet_2018.pbtxt'
proposal_file_train = f'{anno_root}/ava_dense_proposals_train.FAIR.recall_93.9.pkl'
proposal_file_val = f'{anno_root}/ava_dense_proposals_val.FAIR.recall_93.9.pkl'
face_file_train = f'{anno_root}/ava_faces_train_v2.1.csv'
face_file_val = f'{anno_root}/ava_faces_val_v2.1.csv'

train_pipeline = [
    dict(type='SampleAVAFrames', clip_len=4, frame_interval=6),
    dict(type='RawFrameDecode'),
    dict(type='RandomRescale', scale_range=(112, 128)),
    dict(type='RandomCrop', size=112),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW', collapse=True),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(type='SampleAVAFrames', clip_len=4, frame_interval=6, test_mode=True),
    dict(type='RawFrameDecode'),
    dict(type='Resize', scale=(-1, 112)),
    dict(type='FormatShape', input_format='NCTHW', collapse=True),
    dict(type='PackActionInputs')
]
# AVAFaceDataset: the stock AVADataset plus the face boxes and identities that anonymizers and privacy
# metrics use; the detector's inputs are the same.
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    dataset=dict(
        type='mmanon.AVAFaceDataset',
        ann_file=ann_file_train,
        exclude_file=exclude_file_train,
        label_file=label_file,
        proposal_file=proposal_file_train,
        face_file=face_file_train,
        data_prefix=dict(img=data_root),
        pipeline=train_pipeline,
        num_classes=6))
val_dataloader = dict(
    num_workers=2,
    dataset=dict(
        type='mmanon.AVAFaceDataset',
        ann_file=ann_file_val,
        exclude_file=exclude_file_val,
        label_file=label_file,
        proposal_file=proposal_file_val,
        face_file=face_file_val,
        data_prefix=dict(img=data_root),
        pipeline=val_pipeline,
        num_classes=6))
test_dataloader = val_dataloader
val_evaluator = [
    dict(type='AVAMetric', ann_file=ann_file_val, label_file=label_file, exclude_file=exclude_file_val,
         num_classes=6),
    dict(type='mmanon.FacePrivacyMetric', attackers=[dict(type='discriminator')])
]
test_evaluator = val_evaluator

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=600, val_interval=600)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', T_max=550, eta_min=1e-5, by_epoch=False, begin=50, end=600)
]
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=40, norm_type=2))

default_hooks = dict(checkpoint=dict(interval=600, by_epoch=False, save_best=None), logger=dict(interval=20))
custom_hooks = [dict(type='mmanon.RandomStateHook')]
log_processor = dict(by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
