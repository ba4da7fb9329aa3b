# The learned face modifier of Ren et al. (ECCV 2018), starting as the identity; faces are resized to 64x64.
anonymizer = dict(
    type='ResNetAnonymizer',
    in_channels=3,
    base_channels=32,
    num_blocks=6,
    num_downsamples=2,
    crop_size=(64, 64),
    residual=True)
