# Pre-train the face discriminator D (FaceDiscriminatorHead) on identity classification of CASIA-WebFace, as the
# paper's D learns identities from a large face dataset. Faces are aligned by their five landmarks to SphereFace's
# 112x96 crop. Expected under data/casia_webface/ (see the README):
#   images/<identity>/<image>.jpg, identities.txt, train_list.txt, val_list.txt, landmarks.txt
# The checkpoint holds D's weights under 'head.': an adversarial config loads them into its D (same architecture;
# a different num_classes leaves fc_cls out) with init_cfg=dict(type='Pretrained', checkpoint=..., prefix='head.')
# on model.data_preprocessor.discriminator (the README shows it as --cfg-options).
default_scope = 'mmanon'
custom_imports = dict(imports=['mmanon'], allow_failed_imports=False)

data_root = 'data/casia_webface'
# The list files name identities; both splits take their labels from this file, so they agree.
identities = f'{data_root}/identities.txt'
crop_size = (112, 96)

model = dict(
    type='FaceIdentityClassifier',
    # The architecture of D in configs/_base_/adversarial/ava_adversarial.py; CASIA-WebFace has 10575 identities.
    head=dict(type='FaceDiscriminatorHead', num_classes=10575, input_size=crop_size))

train_pipeline = [
    dict(type='LoadFaceImage'),
    dict(type='FaceAlign', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='BrightnessContrastJitter', brightness=0.2, contrast=0.2, prob=0.5),
    dict(type='PackFaceInputs')
]
val_pipeline = [
    dict(type='LoadFaceImage'),
    dict(type='FaceAlign', crop_size=crop_size),
    dict(type='PackFaceInputs')
]
dataset = dict(
    type='FaceIdentityDataset',
    data_root=data_root,
    data_prefix=dict(img_path='images'),
    landmark_file='landmarks.txt',
    metainfo=dict(classes=identities))
train_dataloader = dict(
    batch_size=64,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(ann_file='train_list.txt', pipeline=train_pipeline, **dataset))
val_dataloader = dict(
    batch_size=64,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(ann_file='val_list.txt', pipeline=val_pipeline, test_mode=True, **dataset))
test_dataloader = val_dataloader
# MMAction2's accuracy metric reads the gt_label and pred_score that FaceIdentityClassifier fills in.
val_evaluator = dict(type='mmaction.AccMetric', metric_list=('top_k_accuracy', ),
                     metric_options=dict(top_k_accuracy=dict(topk=(1, 5))))
test_evaluator = val_evaluator

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=20, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# SphereFace's schedule (SGD at 0.1 for a batch of 256, divided by 10 three times), scaled to a batch of 64.
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.025, momentum=0.9, weight_decay=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', milestones=[10, 15, 18], gamma=0.1, by_epoch=True, begin=0, end=20)
]
auto_scale_lr = dict(enable=False, base_batch_size=64)

default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3, save_best='acc/top1', rule='greater'),
    logger=dict(type='LoggerHook', interval=100))
env_cfg = dict(cudnn_benchmark=True, dist_cfg=dict(backend='nccl'))
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
