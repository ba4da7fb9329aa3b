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
    l1_weight=1.0)
# The detector and M share the detector's optimizer (M at a tenth of its rate); D has its own, in the hook.
adversarial_paramwise_cfg = dict(
    custom_keys={
        'data_preprocessor.anonymizer': dict(lr_mult=0.1),
        'data_preprocessor.discriminator': dict(lr_mult=0., decay_mult=0.)
    })
adversarial_hook = dict(
    type='mmanon.AdversarialTrainingHook',
    discriminator_optim_wrapper=dict(optimizer=dict(type='Adam', lr=1e-4)),
    warmup_iters=1000,
    ramp_iters=4000,
    adversarial_weight=1.0)
privacy_metric = dict(type='mmanon.FacePrivacyMetric', attackers=[dict(type='discriminator')])
