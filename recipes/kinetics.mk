# Kinetics-400/600/700 (its CSVs `label,youtube_id,time_start,time_end,split` as
# annotations/kinetics_{train,val}.csv or train.csv + validate.csv, videos named
# `<id>_<start:06d>_<end:06d>.mp4` in videos_train/ + videos_val/ or train/ + val/, flat or in
# label folders): lists with MMAction2's class indices (sorted labels), a model trained, the
# validation videos classified and scored. Videos missing from the download are reported and
# left out, not fatal.
#
#   make -f recipes/kinetics.mk DATA=dir [OUT=dir ARCH=tsm_r50 ...] lists|train|eval
#
# Defaults and rules: recipes/recognition.mk.

DATASET := kinetics

include $(dir $(lastword $(MAKEFILE_LIST)))recognition.mk
