# One batch job split into SHARDS shards (`--shard K/N`: the videos whose ordinal in the list is
# K mod N), run on one host with GNU parallel or as a Slurm array, then merged into the output an
# unsharded run writes, byte for byte. The job: a list's videos through `vsample | vclassify`
# (STEP=classify, predictions merged by `vclassify --merge`) or `vsample | vfeat` (STEP=features,
# feature stores merged by `vfeat --merge`).
#
#   make -f recipes/cluster.mk LIST=val.list ROOT=data MODEL=m.safetensors OUT=runs/x SHARDS=8 parallel
#   make -f recipes/cluster.mk LIST=... ROOT=... MODEL=... OUT=... SHARDS=64 slurm    # writes the scripts
#   make -f recipes/cluster.mk LIST=... ROOT=... MODEL=... OUT=... SHARDS=64 submit   # and submits them
#
# `parallel` runs PARALLEL_JOBS shards at a time (the shard outputs are files: a rerun does only the
# missing ones) and stops at the first failure. `slurm` writes OUT/shard.sbatch (an array job,
# --array=0-N-1, task K running shard K/N) and OUT/merge.sbatch; `submit` submits the array and the
# merge with --dependency=afterok on it, so the merge runs only when every shard succeeded (a shard
# where some video failed exits 1: look at OUT/logs/, fix or drop the video, resubmit). SBATCH_OPTS
# goes into both scripts' #SBATCH lines (partition, time, account). Paths are made absolute, so the
# scripts run from any directory the cluster's nodes share.

BIN          ?= target/debug
LIST         ?= $(error LIST=file: the videos, one per line (vidkit's list format))
ROOT         ?= .
MODEL        ?= $(error MODEL=file.safetensors: the model)
OUT          ?= runs/cluster
SHARDS       ?= 4
PARALLEL_JOBS ?= 2
STEP         ?= classify
# Options of vsample (the model's own sampling protocol comes from --spec-from) and of the tool.
SAMPLE_OPTS  ?=
TOOL_OPTS    ?=
# Threads per shard (vsample's decoders); a Slurm task asks for as many CPUs.
JOBS         ?= 1
SBATCH_OPTS  ?= --time=04:00:00

SHELL        := /bin/bash
.SHELLFLAGS  := -o pipefail -c

abs_bin   = $(abspath $(BIN))
abs_out   = $(abspath $(OUT))
abs_list  = $(abspath $(LIST))
abs_root  = $(abspath $(ROOT))
abs_model = $(abspath $(MODEL))
last      := $(shell echo $$(( $(SHARDS) - 1 )))
ks        := $(shell seq 0 $(last))

ifeq ($(STEP),classify)
  ext    := jsonl
  result := predictions.jsonl
  tool    = $(abs_bin)/vclassify --model $(abs_model) $(TOOL_OPTS)
  merge   = $(abs_bin)/vclassify --merge -q
else ifeq ($(STEP),features)
  ext    := h5
  result := features.h5
  tool    = $(abs_bin)/vfeat --model $(abs_model) $(TOOL_OPTS)
  merge   = $(abs_bin)/vfeat --merge -q
else
  $(error STEP=$(STEP): classify or features)
endif

parts := $(foreach k,$(ks),$(abs_out)/part$(k).$(ext))
# Shard $(1) of SHARDS (a number, or a shell variable such as $$K) into its part file; the tools
# write -o atomically, so a killed shard leaves no part behind.
shard_cmd = $(abs_bin)/vsample --list $(abs_list) --root $(abs_root) --spec-from $(abs_model) $(SAMPLE_OPTS) \
  --shard $(1)/$(SHARDS) -j $(JOBS) -q | $(tool) -q -o $(abs_out)/part$(1).$(ext)

.PHONY: parallel slurm submit clean
parallel: $(abs_out)/$(result)

$(abs_out)/$(result): $(parts)
	$(merge) $(parts) -o $@

# The shard outputs still missing, PARALLEL_JOBS at a time (not PARALLEL: GNU parallel takes
# options from that variable, which make exports), the first failure stopping the rest.
$(parts) &:
	@mkdir -p $(abs_out)
	todo=$$(for k in $(ks); do [ -e $(abs_out)/part$$k.$(ext) ] || echo $$k; done); \
	[ -z "$$todo" ] || parallel --will-cite --halt now,fail=1 -j $(PARALLEL_JOBS) '$(call shard_cmd,{})' ::: $$todo

slurm: $(abs_out)/shard.sbatch $(abs_out)/merge.sbatch

$(abs_out)/shard.sbatch:
	@mkdir -p $(abs_out)/logs
	{ echo '#!/bin/bash'; \
	  echo '#SBATCH --job-name=vidkit-$(STEP)'; \
	  echo '#SBATCH --array=0-$(last)'; \
	  echo '#SBATCH --cpus-per-task=$(JOBS)'; \
	  echo '#SBATCH --output=$(abs_out)/logs/shard-%a.log'; \
	  for o in $(SBATCH_OPTS); do echo "#SBATCH $$o"; done; \
	  echo 'set -euo pipefail'; \
	  echo 'K=$$SLURM_ARRAY_TASK_ID'; \
	  echo '$(call shard_cmd,$$K)'; } > $@.tmp
	mv $@.tmp $@

$(abs_out)/merge.sbatch:
	@mkdir -p $(abs_out)/logs
	{ echo '#!/bin/bash'; \
	  echo '#SBATCH --job-name=vidkit-merge'; \
	  echo '#SBATCH --output=$(abs_out)/logs/merge.log'; \
	  for o in $(SBATCH_OPTS); do echo "#SBATCH $$o"; done; \
	  echo 'set -euo pipefail'; \
	  echo '$(merge) $(parts) -o $(abs_out)/$(result)'; } > $@.tmp
	mv $@.tmp $@

# Prints the two job ids; the merge waits for every task of the array to succeed.
submit: slurm
	array=$$(sbatch --parsable $(abs_out)/shard.sbatch); array=$${array%%;*}; \
	merge=$$(sbatch --parsable --dependency=afterok:$$array $(abs_out)/merge.sbatch); \
	echo "array job $$array, merge job $${merge%%;*}: $(abs_out)/$(result) when both are done"

clean:
	rm -rf $(abs_out)
