# UCF101 (UCF-101/<class>/*.avi + ucfTrainTestlist/, or MMAction2's videos/ + annotations/):
# split SPLIT as vidkit lists with MMAction2's class indices, a model
# trained on its training videos, its test videos classified and scored.
#
#   make -f recipes/ucf101.mk DATA=dir [OUT=dir SPLIT=1 ARCH=tsm_r50 ...] lists|train|eval
#
# A missing annotation file is named. Defaults and rules: recipes/recognition.mk.

DATASET := ucf101

include $(dir $(lastword $(MAKEFILE_LIST)))recognition.mk
