# Replace each face region by blocks of its mean colour, each block a fifth of the region's longer side (chosen
# on real faces: README, "How well real faces stay hidden").
anonymizer = dict(type='Pixelate', block_ratio=0.2)
