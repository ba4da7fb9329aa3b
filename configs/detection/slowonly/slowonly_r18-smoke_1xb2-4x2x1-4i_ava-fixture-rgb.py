# CPU smoke test: the stock SlowOnly AVA 2.1 detector, only shrunk (ResNet-18, no pretrained weights, 64-pixel
# clips of 4 frames, 4 iterations) and pointed at the tiny generated benchmark:
#   python tools/data/make_toy_ava.py data/ava_fixture --preset fixture
_base_ = 'mmaction::detection/slowonly/slowonly_kinetics400-pretrained-r50_8xb16-4x16x1-20e_ava21-rgb.py'

custom_imports = dict(imports=['mmanon'], allow_failed_imports=False)

model = dict(
    init_cfg=None,
    backbone=dict(depth=18),
    roi_head=dict(bbox_head=dict(in_channels=512, num_classes=6, topk=(1, 3))))

data_root = 'data/ava_fixture/rawframes'
anno_root = 'data/ava_fixture/annotations'
ann_file_train = f'{anno_root}/ava_train_v2.1.csv'
ann_file_val = f'{anno_root}/ava_val_v2.1.csv'
exclude_file_train = f'{anno_root}/ava_train_excluded_timestamps_v2.1.csv'
exclude_file_val = f'{anno_root}/ava_val_excluded_timestamps_v2.1.csv'
label_file = f'{anno_root}/ava_action_list_v2.1_for_activitynet_2018.pbtxt'
proposal_file_train = f'{anno_root}/ava_dense_proposals_train.FAIR.recall_93.9.pkl'
proposal_file_val = f'{anno_root}/ava_dense_proposals_val.FAIR.recall_93.9.pkl'

train_pipeline = [
    dict(type='SampleAVAFrames', clip_len=4, frame_interval=2),
    dict(type='RawFrameDecode'),
    dict(type='RandomRescale', scale_range=(64, 80)),
    dict(type='RandomCrop', size=64),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW', collapse=True),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(type='SampleAVAFrames', clip_len=4, frame_interval=2, test_mode=True),
    dict(type='RawFrameDecode'),
    dict(type='Resize', scale=(-1, 64)),
    dict(type='FormatShape', input_format='NCTHW', collapse=True),
    dict(type='PackActionInputs')
]
dataset_cfg = dict(
    label_file=label_file, data_prefix=dict(img=data_root), num_classes=6)
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        ann_file=ann_file_train,
        exclude_file=exclude_file_train,
        proposal_file=proposal_file_train,
        pipeline=train_pipeline,
        **dataset_cfg))
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        ann_file=ann_file_val,
        exclude_file=exclude_file_val,
        proposal_file=proposal_file_val,
        pipeline=val_pipeline,
        **dataset_cfg))
test_dataloader = val_dataloader
val_evaluator = dict(
    ann_file=ann_file_val, label_file=label_file, exclude_file=exclude_file_val, num_classes=6)
test_evaluator = val_evaluator

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=4, val_interval=4)
param_scheduler = [dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=4)]
optim_wrapper = dict(optimizer=dict(lr=0.01))

default_hooks = dict(checkpoint=dict(interval=2, by_epoch=False, save_best=None), logger=dict(interval=1))
custom_hooks = [dict(type='mmanon.RandomStateHook')]
log_processor = dict(by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
