# Replace each 8x8 block of a face by its mean colour.
custom_imports = dict(imports=['mmanon'], allow_failed_imports=False)
anonymizer = dict(type='Pixelate', block_size=8)
