# The adversarial game of Ren et al. (ECCV 2018) for a stock AVA detector, as pieces that an overlay places:
# a learned anonymizer M with a face discriminator D in the data preprocessor, the hook that trains D and
# schedules the game, and the privacy metric.
adversarial_preprocessor = dict(
    type='mmanon.AnonymizerDataPreprocessor',
    anonymizer=dict(type='ResNetAnonymizer', base_channels=32, num_blocks=6, crop_size=(64, 64)),
    discriminator=dict(
        type='FaceDiscriminatorHead',
        # At least the number of training identities, which AVAFaceDataset counts (AVA person ids made
        # unique across videos by default); the hook stops at the start with the number to set if too small.
        num_classes=50000,
        input_size=(112, 96)),
    face_crop_size=(112, 96),
    adversarial_loss='negative_ce',
    ce_cap=12.0,
    l1_weight=1.0,
    temporal_weight=10.0)
# M and D are out of the detector's optimizer: each has its own, in the hook, stepped with the detector's. Their
# Adam is torch's fused one (the same update in one kernel per parameter rather than about ten).
adversarial_hook = dict(
    type='mmanon.AdversarialTrainingHook',
    anonymizer_optim_wrapper=dict(
        optimizer=dict(type='Adam', lr=1e-4, fused=True), clip_grad=dict(max_norm=40, norm_type=2)),
    discriminator_optim_wrapper=dict(optimizer=dict(type='Adam', lr=1e-4, fused=True)),
    warmup_iters=1000,
    ramp_iters=4000,
    adversarial_weight=1.0)
privacy_metric = dict(type='mmanon.FacePrivacyMetric', attackers=[dict(type='discriminator')])
