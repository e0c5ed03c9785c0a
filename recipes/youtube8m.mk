# YouTube-8M (the official TFRecords, 2018 or 2017 release, and vocabulary.csv) as the 2019 Paddle
# video zoo trains on it: frame-level rgb + audio features, a feature-sequence model with a sigmoid
# head and binary cross-entropy, the validation videos scored with GAP@20 (youtube-8m's
# eval_util.py), hit@1, PERR and mAP by `veval --multilabel`. No TensorFlow: `vconvert --lists
# youtube8m` reads the TFRecords (CRCs checked) straight into feature stores.
#
#   make -f recipes/youtube8m.mk DATA=dir [OUT=dir ARCH=attention_lstm|nextvlad|attention_cluster] lists|train|eval
#
# DATA holds vocabulary.csv and frame/train/train*.tfrecord + frame/validate/validate*.tfrecord (or
# video/..., train/ + validate/, PaddleVideo's tf/train/ + tf/val/, or all files in DATA):
#   lists    OUT/train.h5, OUT/val.h5 (per-video [T, 1024] rgb and [T, 128] audio, dequantised as
#            the starter code does, at most MAX_FRAMES frames), OUT/train.list, OUT/val.list
#            (`id l1,l2,...`), OUT/labels.txt (the vocabulary's names). Damaged files are reported
#            and their remaining records skipped; vconvert then exits 1 and make stops: look, and
#            run make again to go on with what was converted.
#   train    OUT/model/best.safetensors (vtrain --resume: an interrupted run goes on)
#   eval     OUT/predictions.jsonl and OUT/metrics.json
#
# Defaults: the zoo's configs (PaddleCV/video/configs/*.yaml, models/*/): AttentionLSTM 10 epochs,
# centred RMSProp at 1e-3 with L2 8e-4, x0.1 after epoch 5; NeXtVLAD 6 epochs of Adam at 2e-4,
# clipped at 1.0; AttentionCluster 5 epochs of Adam at 1e-3, 32 attention units per modality.
# Their batches (1024, 160, 2048 over 4-8 GPUs) are BATCH here. Override any of it with
# TRAIN_OPTS / MODEL_OPTS (-o key=value, as vtrain takes them).

BIN        ?= target/debug
DATA       ?= data/youtube8m
OUT        ?= runs/youtube8m
ARCH       ?= attention_lstm
MAX_FRAMES ?= 300
JOBS       ?= 2
MODEL_OPTS ?=
TRAIN_OPTS ?=
# vconvert's: --f16 (half-size stores), --nextvlad-eigenvals yt8m_pca/eigenvals.npy (rgb as the
# zoo's NeXtVLAD weights take it, for evaluating them after `vconvert --arch nextvlad`).
CONVERT_OPTS ?=

ifeq ($(ARCH),attention_lstm)
BATCH      ?= 1024
PROTOCOL   ?= -o epochs=10 \
  -o 'optimizer={"name":"rmsprop","lr":0.001,"centered":true,"alpha":0.95,"eps":0.000001,"weight_decay":0.0008}' \
  -o 'schedule={"name":"multi_step","base_lr":0.001,"milestones":[5],"gamma":0.1}'
else ifeq ($(ARCH),nextvlad)
BATCH      ?= 160
PROTOCOL   ?= -o epochs=6 -o clip_grad=1.0 \
  -o 'optimizer={"name":"adamw","lr":0.0002,"weight_decay":0.00001,"l2":true}'
else ifeq ($(ARCH),attention_cluster)
BATCH      ?= 2048
PROTOCOL   ?= -o epochs=5 -o 'sequence.clusters=[32,32]' -o 'optimizer={"name":"adamw","lr":0.001,"weight_decay":0}'
else
$(error ARCH=$(ARCH): the YouTube-8M recipe trains attention_lstm, nextvlad or attention_cluster)
endif

.PHONY: all lists train predict eval clean
all: eval

lists: $(OUT)/train.list

# train.list is written last, after the stores: its presence means the conversion finished.
$(OUT)/train.list:
	$(BIN)/vconvert --lists youtube8m --data $(DATA) --out $(OUT) --max-frames $(MAX_FRAMES) $(CONVERT_OPTS)

train: $(OUT)/model/best.safetensors

$(OUT)/model/best.safetensors: $(OUT)/train.list
	$(BIN)/vtrain --arch $(ARCH) --train-list $(OUT)/train.h5 --val-list $(OUT)/val.h5 \
	  --out $(OUT)/model --resume -o 'sequence.modalities=["rgb","audio"]' -o batch_size=$(BATCH) \
	  $(PROTOCOL) $(MODEL_OPTS) $(TRAIN_OPTS) -j $(JOBS) -q > $(OUT)/train-summary.json

predict: $(OUT)/predictions.jsonl

$(OUT)/predictions.jsonl: $(OUT)/model/best.safetensors
	$(BIN)/vclassify --model $< --labels $(OUT)/labels.txt -q -o $@ $(OUT)/val.h5

eval: $(OUT)/metrics.json

$(OUT)/metrics.json: $(OUT)/predictions.jsonl
	$(BIN)/veval --multilabel --pred $< --gt $(OUT)/val.list --labels $(OUT)/labels.txt > $@.tmp
	mv $@.tmp $@

clean:
	rm -rf $(OUT)
