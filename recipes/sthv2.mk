# Something-Something v2 (something-something-v2-{labels,train,validation}.json and
# 20bn-something-something-v2/<id>.webm, or MMAction2's annotations/ + videos/): lists with the
# labels.json indices (a video's class is its `template` without brackets), a model trained,
# the validation videos classified and scored. Flip stays off (vtrain's default): mirroring
# "Pushing something from left to right" makes it another class.
#
#   make -f recipes/sthv2.mk DATA=dir [OUT=dir ARCH=tsm_r50 ...] lists|train|eval
#
# Defaults and rules: recipes/recognition.mk.

DATASET := sthv2

include $(dir $(lastword $(MAKEFILE_LIST)))recognition.mk
