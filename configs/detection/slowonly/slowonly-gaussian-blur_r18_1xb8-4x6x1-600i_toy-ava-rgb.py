# The toy reference detector trained and tested on faces anonymized by the handcrafted gaussian blur baseline.
_base_ = ['./slowonly_r18_1xb8-4x6x1-600i_toy-ava-rgb.py', '../../_base_/anonymizers/gaussian_blur.py']

model = dict(data_preprocessor=dict(anonymizer={{_base_.anonymizer}}))
