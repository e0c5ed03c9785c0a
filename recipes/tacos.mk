# Temporal grounding of sentences (TALL) on TACoS, or any set laid out the same way (such as
# `vsynth --segments`, which writes its segments as grounding queries):
# untrimmed videos → snippet features → TALL trained on the training queries → candidates for
# the evaluation queries (vground) → R@{1,5,10} at IoU {0.1, 0.3, 0.5, 0.7} (veval --grounding,
# TALL's protocol).
#
#   make -f recipes/tacos.mk DATA=dir EXTRACTOR=model.safetensors [OUT=dir TALL_OPTS=... ...]
#
# DATA holds TRAIN_SPLIT.list and EVAL_SPLIT.list (one video path per line, relative to DATA)
# and their queries, TRAIN_SPLIT.queries.jsonl and EVAL_SPLIT.queries.jsonl: JSON Lines
# {"query_id", "video", "embedding" | "embedding_file", "gt": [t0, t1]} (TACoS: the skip-thought
# vector of each sentence; vsynth: its fixed encoder's). EXTRACTOR is any frame model; the
# reference's windows are C3D fc6 over 16-frame units, here each snippet is one frame every
# INTERVAL frames through it (vground --help says how windows are built from snippets). Every
# target is a file, so an interrupted run resumes where it stopped.

BIN        ?= target/debug
DATA       ?= target/demo/untrimmed
EXTRACTOR  ?= target/demo/tsn/best.safetensors
OUT        ?= target/demo/tacos
INTERVAL   ?= 16
SIZE       ?= 256
CROP       ?= 224
JOBS       ?= 2
TRAIN_SPLIT ?= training
EVAL_SPLIT  ?= validation
# TALL's sizes and windows (tall.yaml by default: -o semantic_size=..., -o windows=[128,256]).
TALL_OPTS  ?=
MODEL = $(OUT)/tall/best.safetensors

SAMPLE = $(BIN)/vsample --sampler untrimmed --frames 1 --interval $(INTERVAL) --size $(SIZE) --crop-size $(CROP) -j $(JOBS) -q

.PHONY: all features train ground eval clean
all: eval

features: $(OUT)/$(TRAIN_SPLIT).h5 $(OUT)/$(EVAL_SPLIT).h5

# Snippet features of a subset at their own rate (no resampling: windows need the snippets' times).
$(OUT)/%.h5: $(DATA)/%.list $(EXTRACTOR)
	@mkdir -p $(OUT)
	$(SAMPLE) --list $< --root $(DATA) | $(BIN)/vfeat --model $(EXTRACTOR) -q -o $@

train: $(MODEL)

$(MODEL): $(OUT)/$(TRAIN_SPLIT).h5 $(OUT)/$(EVAL_SPLIT).h5 $(DATA)/$(TRAIN_SPLIT).queries.jsonl $(DATA)/$(EVAL_SPLIT).queries.jsonl
	$(BIN)/vtrain --arch tall --train-list $(OUT)/$(TRAIN_SPLIT).h5 --gt $(DATA)/$(TRAIN_SPLIT).queries.jsonl \
	  --val-list $(OUT)/$(EVAL_SPLIT).h5 --val-queries $(DATA)/$(EVAL_SPLIT).queries.jsonl \
	  --out $(OUT)/tall $(TALL_OPTS) -q > $(OUT)/train-summary.json

ground: $(OUT)/grounding.jsonl

$(OUT)/grounding.jsonl: $(MODEL) $(OUT)/$(EVAL_SPLIT).h5 $(DATA)/$(EVAL_SPLIT).queries.jsonl
	$(BIN)/vground --model $< --queries $(DATA)/$(EVAL_SPLIT).queries.jsonl $(OUT)/$(EVAL_SPLIT).h5 -q -o $@

eval: $(OUT)/metrics.json

# The ground truth travels in each prediction line (vground copies the queries' gt).
$(OUT)/metrics.json: $(OUT)/grounding.jsonl
	$(BIN)/veval --grounding --pred $< > $@.tmp
	mv $@.tmp $@

clean:
	rm -rf $(OUT)
