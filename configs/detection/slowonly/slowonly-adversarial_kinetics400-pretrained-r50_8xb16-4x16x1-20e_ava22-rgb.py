# The adversarial SlowOnly AVA 2.1 overlay on AVA 2.2's annotations (MMAction2 ships SlowOnly configs for AVA
# 2.1 only; AVA 2.2 changes the annotation files, as in its SlowFast AVA 2.2 config).
_base_ = './slowonly-adversarial_kinetics400-pretrained-r50_8xb16-4x16x1-20e_ava21-rgb.py'

anno_root = 'data/ava/annotations'
ann_file_train = f'{anno_root}/ava_train_v2.2.csv'
ann_file_val = f'{anno_root}/ava_val_v2.2.csv'
exclude_file_train = f'{anno_root}/ava_train_excluded_timestamps_v2.2.csv'
exclude_file_val = f'{anno_root}/ava_val_excluded_timestamps_v2.2.csv'
label_file = f'{anno_root}/ava_action_list_v2.2_for_activitynet_2019.pbtxt'

train_dataloader = dict(
    dataset=dict(ann_file=ann_file_train, exclude_file=exclude_file_train, label_file=label_file))
val_dataloader = dict(dataset=dict(ann_file=ann_file_val, exclude_file=exclude_file_val, label_file=label_file))
test_dataloader = val_dataloader
val_evaluator = [
    dict(type='AVAMetric', ann_file=ann_file_val, label_file=label_file, exclude_file=exclude_file_val),
    dict(type='mmanon.FacePrivacyMetric', attackers=[dict(type='discriminator')])
]
test_evaluator = val_evaluator
