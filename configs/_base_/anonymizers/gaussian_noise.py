# Add fixed Gaussian noise (sigma 40 grey levels) to faces; one pattern per face size, so it is not averaged away.
anonymizer = dict(type='GaussianNoise', sigma=40., seed=0)
