# Replace each face region by blocks of its mean colour, each block an eighth of the region's longer side.
anonymizer = dict(type='Pixelate', block_ratio=0.125)
