# Charades (the official annotation download `Charades/Charades_v1_{classes.txt,train.csv,
# test.csv}` and the videos `Charades_v1_480/<id>.mp4`): multi-label lists (each video's set of
# action classes, `path c1,c2,...`; videos without any action left out and counted), a
# multi-label model trained with a sigmoid head and binary cross-entropy, the test videos
# classified (per-class sigmoid scores averaged over clips and views) and scored with mAP over
# classes as the official `Charades_v1_classify.m` (plus GAP and hit@1) by `veval --multilabel`.
#
#   make -f recipes/charades.mk DATA=dir [OUT=dir ARCH=slowfast_r50 FRAMES=32 ...] lists|train|eval
#
# Defaults and rules: recipes/recognition.mk (PySlowFast trains Charades with SlowFast from a
# Kinetics model: ARCH=slowfast_r50 FRAMES=32 TRAIN_OPTS='--init k400.safetensors ...').

DATASET    := charades
MODEL_OPTS := -o multilabel=true -o aggregate=sigmoid
EVAL_OPTS  := --multilabel

include $(dir $(lastword $(MAKEFILE_LIST)))recognition.mk
