# HMDB51 (<class>/*.avi, possibly under hmdb51_org/, + testTrainMulti_7030_splits/, or
# MMAction2's layout): split SPLIT as vidkit lists with MMAction2's class indices, a model
# trained on its training videos, its test videos classified and scored.
#
#   make -f recipes/hmdb51.mk DATA=dir [OUT=dir SPLIT=1 ARCH=tsm_r50 ...] lists|train|eval
#
# A missing annotation file is named. Defaults and rules: recipes/recognition.mk.

DATASET := hmdb51

include $(dir $(lastword $(MAKEFILE_LIST)))recognition.mk
