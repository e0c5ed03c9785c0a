# Temporal action proposals on ActivityNet 1.3 (or any set with its ground truth in that form,
# such as `vsynth --segments`): untrimmed videos → snippet features resampled to BMN's steps →
# BMN trained on the training subset → proposals on the validation subset → AR@AN and AUC
# (LOCALIZER=bsn: BSN instead; LOCALIZER=ctcn: C-TCN's labelled detections and their mAP).
#
#   make -f recipes/activitynet.mk DATA=dir EXTRACTOR=tsn.safetensors [OUT=dir TSCALE=100 LOCALIZER=bmn ...]
#
# DATA holds training.list and validation.list (one video path per line, relative to DATA; the
# file name without extension, with or without `v_`, is the video's id in GT) and GT, the
# ActivityNet JSON (default DATA/activity_net.json). EXTRACTOR is any frame model (TSN, TSM,
# PP-TSM: vconvert a checkpoint). Features are MMAction2's and PaddleVideo's: one frame every
# INTERVAL frames through the extractor, the sequence average-pooled to TSCALE steps
# (`vfeat --rescale`). The rules are recipes/localization.mk's: every target is a file, so an
# interrupted run resumes where it stopped.

BIN       ?= target/debug
DATA      ?= target/demo/untrimmed
GT        ?= $(DATA)/activity_net.json
EXTRACTOR ?= target/demo/tsn/best.safetensors
OUT       ?= target/demo/activitynet
# PaddleVideo/MMAction2: a snippet every 16 frames, 100 steps; BMN's own sizes by default.
INTERVAL  ?= 16
SIZE      ?= 256
CROP      ?= 224
TSCALE    ?= 100
JOBS      ?= 2
BMN_OPTS  ?=
TRAIN_OPTS ?=

TRAIN_SPLIT  := training
EVAL_SPLIT   := validation
VAL_FEATURES ?= $(OUT)/validation.h5

include $(dir $(lastword $(MAKEFILE_LIST)))localization.mk
