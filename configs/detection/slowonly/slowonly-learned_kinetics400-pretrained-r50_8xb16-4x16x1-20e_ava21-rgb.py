# The stock SlowOnly AVA 2.1 detector, seeing every face modified by a learned anonymizer that adversarial
# training produced (slowonly-adversarial_...); the anonymizer is loaded from that checkpoint and kept fixed.
_base_ = 'mmaction::detection/slowonly/slowonly_kinetics400-pretrained-r50_8xb16-4x16x1-20e_ava21-rgb.py'
custom_imports = dict(imports=['mmanon'], allow_failed_imports=False)
anonymizer_checkpoint = 'work_dirs/slowonly-adversarial_kinetics400-pretrained-r50_8xb16-4x16x1-20e_ava21-rgb/epoch_20.pth'

model = dict(
    data_preprocessor=dict(
        type='mmanon.AnonymizerDataPreprocessor',
        freeze_anonymizer=True,
        anonymizer=dict(
            type='ResNetAnonymizer',
            init_cfg=dict(type='Pretrained', checkpoint=anonymizer_checkpoint, prefix='data_preprocessor.anonymizer.'))))
