# The rules shared by recipes/activitynet.mk and recipes/thumos14.mk (include it after setting
# BIN DATA GT EXTRACTOR OUT INTERVAL SIZE CROP TSCALE JOBS BMN_OPTS TRAIN_OPTS, TRAIN_SPLIT and
# EVAL_SPLIT, the subsets of GT to train and score on, and VAL_FEATURES, the held-out features
# vtrain chooses its best model by, or nothing):
#   DATA/<split>.list → OUT/<split>.h5 (snippet features, TSCALE steps) →
#   OUT/$(LOCALIZER)/best.safetensors → OUT/proposals.json → OUT/metrics.json (for proposals
#   the AR@AN table on stderr and the curve in ar_an.svg; for C-TCN's detections the mAP table).
# LOCALIZER is bmn (default), bsn or ctcn; BMN_OPTS go to bmn only, TRAIN_OPTS to any.
# Every target is a file, so an interrupted run resumes where it stopped; `make -j2` extracts
# two subsets side by side. On a cluster, shard the extraction (vsample --shard K/N ... -o
# partK.h5) and join with `vfeat --merge`.

LOCALIZER ?= bmn
# Each localizer's size options for TSCALE steps, and how its output is scored.
SIZE_OPTS_bmn  = -o tscale=$(TSCALE) -o dscale=$(TSCALE) $(BMN_OPTS)
SIZE_OPTS_bsn  = -o temporal_dim=$(TSCALE)
SIZE_OPTS_ctcn =
EVAL_bmn  = --proposals --plot $(OUT)/ar_an.svg
EVAL_bsn  = --proposals --plot $(OUT)/ar_an.svg
EVAL_ctcn = --detection
MODEL = $(OUT)/$(LOCALIZER)/best.safetensors

SAMPLE = $(BIN)/vsample --sampler untrimmed --frames 1 --interval $(INTERVAL) --size $(SIZE) --crop-size $(CROP) -j $(JOBS) -q

.PHONY: all features train proposals eval clean
all: eval

features: $(OUT)/$(TRAIN_SPLIT).h5 $(OUT)/$(EVAL_SPLIT).h5

# Snippet features of a subset: a frame every INTERVAL through the extractor, each video's
# sequence average-pooled to TSCALE steps (MMAction2's pool_feature), with its duration.
$(OUT)/%.h5: $(DATA)/%.list $(EXTRACTOR)
	@mkdir -p $(OUT)
	$(SAMPLE) --list $< --root $(DATA) | $(BIN)/vfeat --model $(EXTRACTOR) --rescale $(TSCALE) -q -o $@

train: $(MODEL)

$(MODEL): $(OUT)/$(TRAIN_SPLIT).h5 $(VAL_FEATURES) $(GT)
	$(BIN)/vtrain --arch $(LOCALIZER) --train-list $< $(if $(VAL_FEATURES),--val-list $(VAL_FEATURES)) --gt $(GT) \
	  --train-subset $(TRAIN_SPLIT) --out $(OUT)/$(LOCALIZER) $(SIZE_OPTS_$(LOCALIZER)) \
	  $(TRAIN_OPTS) -q > $(OUT)/train-summary.json

proposals: $(OUT)/proposals.json

$(OUT)/proposals.json: $(MODEL) $(OUT)/$(EVAL_SPLIT).h5
	$(BIN)/vpropose --model $< $(OUT)/$(EVAL_SPLIT).h5 --format activitynet -q -o $@

eval: $(OUT)/metrics.json

$(OUT)/metrics.json: $(OUT)/proposals.json $(GT)
	$(BIN)/veval $(EVAL_$(LOCALIZER)) --pred $< --gt $(GT) --subset $(EVAL_SPLIT) > $@.tmp
	mv $@.tmp $@

clean:
	rm -rf $(OUT)
