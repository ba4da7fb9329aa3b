# CPU smoke test of adversarial training: the smoke config with a small learned anonymizer and discriminator,
# sized for the tests' tiny benchmark (python tools/data/make_toy_ava.py data/ava_fixture --preset fixture).
_base_ = './slowonly_r18-smoke_1xb2-4x2x1-4i_ava-fixture-rgb.py'

model = dict(
    data_preprocessor=dict(
        type='mmanon.AnonymizerDataPreprocessor',
        anonymizer=dict(type='ResNetAnonymizer', base_channels=8, num_blocks=2, crop_size=(32, 32)),
        discriminator=dict(
            type='FaceDiscriminatorHead', num_classes=4, input_size=(32, 32), base_channels=8, num_stages=2,
            embed_dims=16),
        face_crop_size=(32, 32),
        l1_weight=1.0,
        temporal_weight=10.0))
train_dataloader = dict(dataset=dict(type='mmanon.AVAFaceDataset', face_file=f'{_base_.anno_root}/ava_faces_train_v2.1.csv'))
custom_hooks = [
    dict(type='mmanon.RandomStateHook'),
    dict(type='mmanon.AdversarialTrainingHook', warmup_iters=1, ramp_iters=2, freeze_detector_iters=1)
]
