# The toy reference detector trained and tested on faces anonymized by the handcrafted pixelate baseline.
_base_ = ['./slowonly_r18_1xb8-4x6x1-600i_toy-ava-rgb.py']

# Every toy face is about 12 pixels tall (its region about 24): the absolute size the toy benchmark was measured
# with. The face-relative default of configs/_base_/anonymizers/, made for real faces of every size, would be
# weaker on these regions.
model = dict(data_preprocessor=dict(anonymizer=dict(type='Pixelate', block_size=8)))
