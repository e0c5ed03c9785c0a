# Video captioning (ETS) on ActivityNet Captions, or any set laid out the same way (such as
# `vsynth --captions`, which writes one sentence per clip):
# videos → per-frame features → ETS trained on the training captions → a caption per evaluation
# video (vcaption, beam 3) → BLEU-1..4, ROUGE-L, CIDEr-D and, with METEOR_JAR, METEOR
# (veval --captions, pycocoevalcap 1.2's numbers).
#
#   make -f recipes/activitynet_captions.mk DATA=dir EXTRACTOR=model.safetensors [OUT=dir ETS_OPTS=... ...]
#
# DATA holds TRAIN_SPLIT.list and EVAL_SPLIT.list (one video path per line, relative to DATA)
# and the captions, TRAIN_CAPTIONS and EVAL_CAPTIONS: ActivityNet Captions' train.json and
# val_1.json ({video: {"duration", "timestamps", "sentences"}}), or {video: [sentences]} as
# vsynth writes. The reference's features are ResNet-152 pool5 at 5 frames a second: EXTRACTOR is
# any frame model, one frame every INTERVAL frames (6 at 30 fps is the reference's 5). Training
# cuts each sentence's event out of its video's features by its timestamps, as the reference's
# reader; vcaption captions each evaluation video whole, and veval scores it against all the
# sentences of that video (the reference instead captions each ground-truth event: give vcaption
# the events' features to do the same). Every target is a file, so an interrupted run resumes
# where it stopped; `make -j2` extracts both splits side by side.

BIN        ?= target/debug
DATA       ?= target/demo/captions
EXTRACTOR  ?= target/demo/tsn/best.safetensors
OUT        ?= target/demo/activitynet_captions
INTERVAL   ?= 6
SIZE       ?= 256
CROP       ?= 224
JOBS       ?= 2
TRAIN_SPLIT ?= train
EVAL_SPLIT  ?= val
TRAIN_CAPTIONS ?= $(DATA)/train.json
EVAL_CAPTIONS  ?= $(DATA)/val_1.json
# ETS's sizes and schedule (ets.yaml by default: -o epochs=..., -o fc_dim=...).
ETS_OPTS   ?=
# meteor-1.5.jar (pycocoevalcap's, with its data/ beside it) to score METEOR too.
METEOR_JAR ?=
MODEL = $(OUT)/ets/best.safetensors

SAMPLE = $(BIN)/vsample --sampler untrimmed --frames 1 --interval $(INTERVAL) --size $(SIZE) --crop-size $(CROP) -j $(JOBS) -q

.PHONY: all features train caption eval clean
all: eval

features: $(OUT)/$(TRAIN_SPLIT).h5 $(OUT)/$(EVAL_SPLIT).h5

# Per-frame features of a split at their own rate, with each video's duration (for the events).
$(OUT)/%.h5: $(DATA)/%.list $(EXTRACTOR)
	@mkdir -p $(OUT)
	$(SAMPLE) --list $< --root $(DATA) | $(BIN)/vfeat --model $(EXTRACTOR) -q -o $@

train: $(MODEL)

$(MODEL): $(OUT)/$(TRAIN_SPLIT).h5 $(OUT)/$(EVAL_SPLIT).h5 $(TRAIN_CAPTIONS) $(EVAL_CAPTIONS)
	$(BIN)/vtrain --arch ets --train-list $(OUT)/$(TRAIN_SPLIT).h5 --gt $(TRAIN_CAPTIONS) \
	  --val-list $(OUT)/$(EVAL_SPLIT).h5 --val-gt $(EVAL_CAPTIONS) \
	  --out $(OUT)/ets $(ETS_OPTS) -q > $(OUT)/train-summary.json

caption: $(OUT)/captions.jsonl

$(OUT)/captions.jsonl: $(MODEL) $(OUT)/$(EVAL_SPLIT).h5
	$(BIN)/vcaption --model $< $(OUT)/$(EVAL_SPLIT).h5 --beams -q -o $@

eval: $(OUT)/metrics.json

# Only the captioned videos are scored (a file may list videos without features).
$(OUT)/metrics.json: $(OUT)/captions.jsonl $(EVAL_CAPTIONS)
	$(BIN)/veval --captions --pred $< --gt $(EVAL_CAPTIONS) --allow-missing \
	  $(if $(METEOR_JAR),--meteor-jar $(METEOR_JAR)) > $@.tmp
	mv $@.tmp $@

clean:
	rm -rf $(OUT)
