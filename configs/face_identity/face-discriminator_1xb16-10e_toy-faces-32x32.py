# The CASIA-WebFace pre-training on generated faces, in about 10 seconds on one CPU core (a net this small only
# loses time to synchronising more threads):
#   python tools/data/make_toy_faces.py data/toy_faces
#   OMP_NUM_THREADS=1 python tools/train.py configs/face_identity/face-discriminator_1xb16-10e_toy-faces-32x32.py
# Its 24 identities are those of the toy AVA benchmark, and its D is the one of
# configs/detection/slowonly/slowonly-adversarial_r18_1xb8-4x6x1-600i_toy-ava-rgb.py, so the checkpoint loads
# there whole, fc_cls included (see the CASIA-WebFace config).
_base_ = './face-discriminator_1xb64-20e_casia-webface-112x96.py'

data_root = 'data/toy_faces'
identities = f'{data_root}/identities.txt'
crop_size = (32, 32)

model = dict(
    head=dict(num_classes=24, input_size=crop_size, base_channels=16, num_stages=3, embed_dims=64))

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
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=identities), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=identities), pipeline=val_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(max_epochs=10, val_interval=5)
optim_wrapper = dict(optimizer=dict(_delete_=True, type='Adam', lr=1e-3))
param_scheduler = []
auto_scale_lr = dict(base_batch_size=16)

default_hooks = dict(checkpoint=dict(interval=5), logger=dict(interval=5))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
