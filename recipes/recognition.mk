# The rules shared by the recognition dataset recipes (recipes/ucf101.mk, hmdb51.mk, kinetics.mk,
# sthv2.mk, charades.mk):
# official annotations → OUT/{train,val}.list + labels.txt (`vconvert --lists`) → a model trained
# on the training list (`vtrain`) → the test videos through `vsample | vclassify` with the test
# protocol (CLIPS clips × VIEW crops, scores averaged) → OUT/metrics.json (`veval`). Include it
# after setting DATASET; the defaults below are MMAction2's TSM protocol (8 segments, 256 short
# side, 224 crops; test 1 clip × 3 crops). Every target is a file: an interrupted run resumes
# where it stopped (`vtrain --resume`).

BIN        ?= target/debug
DATA       ?= data/$(DATASET)
OUT        ?= runs/$(DATASET)
SPLIT      ?= 1
ARCH       ?= tsm_r50
FRAMES     ?= 8
SIZE       ?= 256
CROP_SIZE  ?= 224
CLIPS      ?= 1
VIEW       ?= three
JOBS       ?= 2
TRAIN_OPTS ?=
# The dataset's own (a multi-label set's sigmoid head and metrics); recipes set them.
MODEL_OPTS ?=
EVAL_OPTS  ?=

.PHONY: all lists train predict eval clean
all: eval

lists: $(OUT)/train.list

$(OUT)/train.list:
	$(BIN)/vconvert --lists $(DATASET) --data $(DATA) --split $(SPLIT) --out $(OUT)

train: $(OUT)/model/best.safetensors

$(OUT)/model/best.safetensors: $(OUT)/train.list
	$(BIN)/vtrain --arch $(ARCH) --train-list $(OUT)/train.list --val-list $(OUT)/val.list --root $(DATA) \
	  --out $(OUT)/model --resume -o frames=$(FRAMES) -o short_side=$(SIZE) -o crop_size=$(CROP_SIZE) \
	  $(MODEL_OPTS) $(TRAIN_OPTS) -j $(JOBS) -q > $(OUT)/train-summary.json

predict: $(OUT)/predictions.jsonl

$(OUT)/predictions.jsonl: $(OUT)/model/best.safetensors
	$(BIN)/vsample --list $(OUT)/val.list --root $(DATA) --spec-from $< --clips $(CLIPS) --crop $(VIEW) -j $(JOBS) -q \
	  | $(BIN)/vclassify --model $< --labels $(OUT)/labels.txt -q -o $@

eval: $(OUT)/metrics.json

$(OUT)/metrics.json: $(OUT)/predictions.jsonl
	$(BIN)/veval --pred $< --gt $(OUT)/val.list --labels $(OUT)/labels.txt $(EVAL_OPTS) > $@.tmp
	mv $@.tmp $@

clean:
	rm -rf $(OUT)
