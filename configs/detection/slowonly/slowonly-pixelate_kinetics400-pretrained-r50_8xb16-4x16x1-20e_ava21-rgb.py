# The stock SlowOnly AVA 2.1 detector, seeing every face anonymized by the pixelate anonymizer.
_base_ = [
    'mmaction::detection/slowonly/slowonly_kinetics400-pretrained-r50_8xb16-4x16x1-20e_ava21-rgb.py',
    '../../_base_/anonymizers/pixelate.py'
]
custom_imports = dict(imports=['mmanon'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(type='mmanon.AnonymizerDataPreprocessor', anonymizer={{_base_.anonymizer}}))
