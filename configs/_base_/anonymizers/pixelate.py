# Replace each 8x8 block of a face by its mean colour.
anonymizer = dict(type='Pixelate', block_size=8)
