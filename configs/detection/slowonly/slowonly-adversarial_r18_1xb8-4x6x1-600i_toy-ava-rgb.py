# The paper's adversarial training on the toy benchmark: the stock detector sees faces modified by a learned
# anonymizer M, which is trained to fool a face discriminator D while keeping actions detectable. M fights D
# with the maximum-entropy objective: it must leave D's identity posterior uniform, not merely wrong. D takes three
# steps at twice the learning rate per adversarial step of M, and each of its steps also learns from anonymized
# faces of the last 1024 given to it (replay), so that what fooled an earlier D is learned back: without replay
# the worst-case re-identification of seed 1 was 0.134-0.151, with it 0.087 (README, "The toy benchmark"). The
# temporal term is 1.0: at 10.0 seed 1 kept only 88.5% of the raw frame-mAP (worst case 0.126), at
# 1.0 both seeds meet the target (99.6% / 0.094, 116.1% / 0.087), at the cost of flicker on real faces (2.17 times
# the raw face's change between frames, 1.21 at 10.0; README, "Face tubes").
_base_ = './slowonly_r18_1xb8-4x6x1-600i_toy-ava-rgb.py'

model = dict(
    data_preprocessor=dict(
        anonymizer=dict(type='ResNetAnonymizer', base_channels=16, num_blocks=3, crop_size=(32, 32)),
        discriminator=dict(
            type='FaceDiscriminatorHead',
            num_classes=24,
            input_size=(32, 32),
            base_channels=16,
            num_stages=3,
            embed_dims=64),
        adversarial_loss='uniform',
        l1_weight=1.0,
        temporal_weight=1.0))
custom_hooks = [
    dict(type='mmanon.RandomStateHook'),
    dict(
        type='mmanon.AdversarialTrainingHook',
        # M with the detector's optimizer settings, in a wrapper of its own (without the detector's schedule);
        # both players with torch's fused Adam (one kernel per parameter, the same update).
        anonymizer_optim_wrapper=dict(
            optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4, fused=True),
            clip_grad=dict(max_norm=40, norm_type=2)),
        discriminator_optim_wrapper=dict(optimizer=dict(type='Adam', lr=2e-3, fused=True)),
        discriminator_steps=3,
        replay_size=1024,
        warmup_iters=100,
        ramp_iters=100,
        adversarial_weight=1.0)
]
