# The stock SlowFast AVA 2.1 detector trained on faces anonymized by a learned anonymizer that fights a face
# discriminator (Ren et al., ECCV 2018). The detector itself is the stock FastRCNN.
_base_ = [
    'mmaction::detection/slowfast/slowfast_kinetics400-pretrained-r50_8xb16-4x16x1-20e_ava21-rgb.py',
    '../../_base_/adversarial/ava_adversarial.py'
]
custom_imports = dict(imports=['mmanon'], allow_failed_imports=False)
model = dict(data_preprocessor={{_base_.adversarial_preprocessor}})
custom_hooks = [dict(type='mmanon.RandomStateHook'), {{_base_.adversarial_hook}}]
train_dataloader = dict(dataset=dict(type='mmanon.AVAFaceDataset'))
val_dataloader = dict(dataset=dict(type='mmanon.AVAFaceDataset'))
test_dataloader = val_dataloader
val_evaluator = [{{_base_.val_evaluator}}, {{_base_.privacy_metric}}]
test_evaluator = val_evaluator
