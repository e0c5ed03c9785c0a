# Temporal action proposals on THUMOS14: BMN trained on the validation videos (THUMOS14's
# custom: its training set is trimmed UCF101) and scored on the test videos against the
# per-class annotation files (`<Class>_val.txt`, `<Class>_test.txt`: `video start end` lines).
#
#   make -f recipes/thumos14.mk DATA=dir ANNOTATIONS=dir EXTRACTOR=tsn.safetensors [OUT=dir ...]
#
# DATA holds validation.list and test.list (video paths relative to DATA, file names are the
# ids: video_validation_0000051.mp4). THUMOS14's annotations give no durations: they come from
# the features, which vfeat stores per video. Videos are long (minutes) with many short actions:
# the BMN paper and MMAction2 slide 128-step windows over them; this recipe resamples each
# whole video to TSCALE steps as for ActivityNet, so raise TSCALE (and lower INTERVAL) for
# short actions. The rules are recipes/localization.mk's: every target is a file, so an
# interrupted run resumes where it stopped.

BIN         ?= target/debug
DATA        ?= data/thumos14
ANNOTATIONS ?= $(DATA)/annotations
EXTRACTOR   ?= tsn.safetensors
OUT         ?= runs/thumos14
INTERVAL    ?= 5
SIZE        ?= 256
CROP        ?= 224
TSCALE      ?= 256
JOBS        ?= 2
BMN_OPTS    ?=
TRAIN_OPTS  ?=

GT           := $(ANNOTATIONS)
TRAIN_SPLIT  := validation
EVAL_SPLIT   := test
# No held-out videos: best.safetensors is the last epoch's. Set VAL_FEATURES to features of a
# split of your own (and its videos in another subset) to choose by AUC.
VAL_FEATURES ?=

include $(dir $(lastword $(MAKEFILE_LIST)))localization.mk
