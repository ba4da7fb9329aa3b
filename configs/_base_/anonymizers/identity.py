# Leave faces untouched: the raw, non-private upper bound.
anonymizer = dict(type='IdentityAnonymizer')
