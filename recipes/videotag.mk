# VideoTag's two stages (PaddleVideo applications/VideoTag) as a Makefile recipe:
#   1. a frame model (TSN) extracts per-frame features at a fixed count per video into HDF5;
#   2. AttentionLSTM learns from those feature sequences;
#   3. new videos are classified through the pipe  vsample | vfeat | vclassify.
#
#   make -f recipes/videotag.mk DATA=dir EXTRACTOR=tsn.safetensors [OUT=dir FRAMES=N SIZE=S ...]
#
# DATA holds train.list, val.list (`path label` lines, paths relative to DATA) and labels.txt;
# EXTRACTOR is any 2D vidkit model (vconvert a TSN checkpoint, or train one with vtrain). Every
# target is a file, so an interrupted run resumes where it stopped, and `make -j` extracts the
# two splits side by side. On a cluster, shard the extraction (vsample --shard K/N ... -o partK.h5)
# and join with `vfeat --merge`.

BIN       ?= target/debug
DATA      ?= target/demo/synth
EXTRACTOR ?= target/demo/tsn/best.safetensors
OUT       ?= target/demo/videotag
# VideoTag samples 300 frames per video; short synthetic clips need fewer.
FRAMES    ?= 300
SIZE      ?= 224
JOBS      ?= 2
EPOCHS    ?= 30
LR        ?= 0.001
# AttentionLSTM sizes (PaddleVideo: embedding 512, LSTM 1024, fc 8192 and 4096).
LSTM_OPTS ?= -o sequence.embedding_size=512 -o sequence.lstm_size=1024 -o sequence.hidden_sizes=[8192,4096]
TRAIN_OPTS ?= -o batch_size=16 -o epochs=$(EPOCHS) -o 'optimizer={"name":"adamw","lr":$(LR),"weight_decay":0.0001}'

SAMPLE = $(BIN)/vsample --sampler uniform --frames $(FRAMES) --size $(SIZE) --crop-size $(SIZE) -j $(JOBS) -q

.PHONY: all features train predict eval clean
all: eval

features: $(OUT)/train.h5 $(OUT)/val.h5

# Stage 1: frames → per-frame features, one HDF5 store per split (written atomically).
$(OUT)/%.h5: $(DATA)/%.list $(EXTRACTOR)
	@mkdir -p $(OUT)
	$(SAMPLE) --list $< --root $(DATA) | $(BIN)/vfeat --model $(EXTRACTOR) -o $@

train: $(OUT)/lstm/best.safetensors

# Stage 2: the sequence model on the stored features.
$(OUT)/lstm/best.safetensors: $(OUT)/train.h5 $(OUT)/val.h5
	$(BIN)/vtrain --arch attention_lstm --train-list $(OUT)/train.h5 --val-list $(OUT)/val.h5 \
	  --out $(OUT)/lstm $(LSTM_OPTS) $(TRAIN_OPTS) -q > $(OUT)/train-summary.json

predict: $(OUT)/predictions.jsonl

# New videos go through the whole pipe, nothing stored in between.
$(OUT)/predictions.jsonl: $(OUT)/lstm/best.safetensors $(DATA)/val.list
	$(SAMPLE) --list $(DATA)/val.list --root $(DATA) \
	  | $(BIN)/vfeat --model $(EXTRACTOR) \
	  | $(BIN)/vclassify --model $(OUT)/lstm/best.safetensors --labels $(DATA)/labels.txt -o $@

eval: $(OUT)/predictions.jsonl
	$(BIN)/veval --pred $< --gt $(DATA)/val.list --labels $(DATA)/labels.txt

clean:
	rm -rf $(OUT)
