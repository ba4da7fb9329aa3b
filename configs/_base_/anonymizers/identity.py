# Leave faces untouched: the raw, non-private upper bound.
custom_imports = dict(imports=['mmanon'], allow_failed_imports=False)
anonymizer = dict(type='IdentityAnonymizer')
