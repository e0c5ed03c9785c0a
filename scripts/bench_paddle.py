"""`make bench`, PaddleVideo's recognizers: vidkit's forward against PaddlePaddle's. Same input
(batch 1, 8 frames, 224²), same thread count; prints the ratio vidkit time / Paddle time (below
1.0 is faster). Runs in the paddle tier of scripts/peers.sh.

  --arch pptsmv2_lcnetv2 (default): against Paddle's inference predictor with oneDNN (MKL-DNN)
      on, the deployment path PaddleVideo documents (tools/export_model.py, then
      paddle.inference).
  --arch pptimesformer_vit_b: against ppvideo's VisionTransformer (ViT-B/16, 12 divided
      space-time blocks) + ppTimeSformerHead in Paddle's dynamic graph under no_grad (its
      forward resizes embeddings in Python, which paddle.jit cannot export), random weights.

    python bench_paddle.py --vidkit CMD --threads 2 --json OUT [--arch A] [--reps 5] [--rounds 3]
    python bench_paddle.py --vidkit CMD --threads 2 --json OUT --arch pptimesformer_vit_b --frames 16 --memory

--frames F: the clip length (PP-TimeSformer: 8 or 16, the model built for it). --memory: instead
of timing, the peak resident memory (ru_maxrss) of one process each that builds the model with
random weights and runs one forward: vidkit's bench_models example, and a Python process that
imports Paddle and ppvideo and does the same (both sides' totals, libraries included).

vidkit and Paddle alternate --rounds times (each a median of --reps); the ratio is the median of
the per-round ratios, as in bench_models.py.

The Paddle model is ppvideo's Recognizer2D(PPTSM_v2, MoViNetHead) with random weights, 400
classes, exported with paddle.jit.save for a fixed input [1, 8, 3, 224, 224].
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.dirname(__file__))
# Paddle's dynamic graph takes its CPU threads from OMP_NUM_THREADS when it loads (unset: measured
# 11.3 s for PP-TimeSformer's 8-frame forward on 2 cores, 6.8 s with 2): set it from --threads
# before the import, so both sides run the same threads.
if "--threads" in sys.argv[:-1]:
    os.environ["OMP_NUM_THREADS"] = sys.argv[sys.argv.index("--threads") + 1]
import paddle  # noqa: E402
from export_paddle_parity import build_recognizer  # noqa: E402

FRAMES, SIZE, CLASSES = 8, 224, 400


class Infer(paddle.nn.Layer):
    """Recognizer2D.forward_net without its in-place reshape, which static graphs refuse."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        feature = self.model.backbone(paddle.reshape(x, [-1, 3, SIZE, SIZE]))
        return self.model.head(feature, FRAMES)


def export(prefix):
    model = build_recognizer("pptsmv2_lcnetv2", FRAMES, CLASSES, seed=0)
    model.eval()
    spec = [paddle.static.InputSpec([1, FRAMES, 3, SIZE, SIZE], "float32", "x")]
    paddle.jit.save(paddle.jit.to_static(Infer(model), input_spec=spec, full_graph=True), prefix)


def median_timer(run):
    """A function of `reps` that times that many calls of `run` and returns their median."""

    def times(reps):
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            run()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    return times


def paddle_timer(prefix, threads):
    """The predictor built and warmed once; the returned function times `reps` runs."""
    from paddle import inference

    # Paddle 3 saves the program as JSON (PIR); older versions as .pdmodel.
    model_file = next(f for f in glob.glob(prefix + ".*") if f.endswith((".json", ".pdmodel")))
    config = inference.Config(model_file, prefix + ".pdiparams")
    config.disable_gpu()
    config.enable_mkldnn()
    config.set_cpu_math_library_num_threads(threads)
    config.disable_glog_info()
    predictor = inference.create_predictor(config)
    x = np.random.default_rng(0).standard_normal((1, FRAMES, 3, SIZE, SIZE)).astype("float32")
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    output = predictor.get_output_handle(predictor.get_output_names()[0])

    def run():
        handle.copy_from_cpu(x)
        predictor.run()
        return output.copy_to_cpu()

    assert run().shape == (1, CLASSES)  # warm-up (oneDNN builds its kernels on the first run)

    return median_timer(run)


def timesformer_timer(threads, frames=FRAMES):
    """ppvideo's PP-TimeSformer in the dynamic graph; the returned function times `reps` runs."""
    from paddlevideo.modeling.backbones.vit import VisionTransformer
    from paddlevideo.modeling.heads.pptimesformer_head import ppTimeSformerHead

    paddle.set_device("cpu")
    paddle.seed(0)
    backbone = VisionTransformer(img_size=SIZE, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                                 qkv_bias=False, epsilon=1e-6, num_seg=frames,
                                 attention_type="divided_space_time")
    head = ppTimeSformerHead(num_classes=CLASSES, in_channels=768)
    backbone.eval()
    head.eval()
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((1, 3, frames, SIZE, SIZE)).astype("float32"))

    def run():
        with paddle.no_grad():
            return head(backbone(x)).numpy()

    assert run().shape == (1, CLASSES)  # warm-up

    return median_timer(run)


def peak_rss_mb(cmd, env):
    """Peak resident memory (MB) of `cmd`, run alone as this process's only child."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if after <= before:
        sys.exit(f"bench_paddle: cannot tell {cmd[0]}'s peak memory from an earlier child's ({before} KB)")
    return after / 1024, out


def memory_row(a, env):
    ours, _ = peak_rss_mb([os.path.abspath(a.vidkit), a.arch, str(a.frames), str(SIZE), "1", "forward"], env)
    child = [sys.executable, os.path.abspath(__file__), "--vidkit", a.vidkit, "--json", os.devnull,
             "--arch", a.arch, "--frames", str(a.frames), "--paddle-forward-once"]
    theirs, _ = peak_rss_mb(child, env)
    row = {"arch": a.arch, "input": f"{a.frames}x{SIZE}", "vidkit_peak_mb": ours, "paddle_peak_mb": theirs,
           "memory_ratio": ours / theirs}
    print(f"\n{a.arch}, {a.frames}x{SIZE}, batch 1, one forward: peak resident memory, vidkit {ours:.0f} MB, "
          f"Paddle {paddle.__version__} (dynamic graph, no_grad) {theirs:.0f} MB, ratio {ours / theirs:.2f}")
    with open(a.json, "w") as f:
        json.dump({"paddle": paddle.__version__, "rows": [row]}, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vidkit", required=True, help="path of the bench_models example binary")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="alternations of vidkit and Paddle")
    ap.add_argument("--json", required=True)
    ap.add_argument("--arch", default="pptsmv2_lcnetv2", choices=["pptsmv2_lcnetv2", "pptimesformer_vit_b"])
    ap.add_argument("--frames", type=int, default=FRAMES)
    ap.add_argument("--memory", action="store_true", help="peak resident memory of one forward instead")
    ap.add_argument("--paddle-forward-once", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.vidkit = os.path.abspath(a.vidkit)  # the runs below change the working directory
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))
    if a.frames != FRAMES and a.arch != "pptimesformer_vit_b":
        sys.exit("bench_paddle: --frames applies to pptimesformer_vit_b")
    if a.paddle_forward_once:
        with tempfile.TemporaryDirectory() as d:
            os.chdir(d)
            timesformer_timer(a.threads, a.frames)  # builds the model and runs its warm-up forward
        return
    if a.memory:
        if a.arch != "pptimesformer_vit_b":
            sys.exit("bench_paddle: --memory applies to pptimesformer_vit_b")
        with tempfile.TemporaryDirectory() as d:
            os.chdir(d)
            memory_row(a, env)
        return
    # Absolute: the rounds run from a temporary working directory (see below).
    cmd = [os.path.abspath(a.vidkit), a.arch, str(a.frames), str(SIZE), str(a.reps), "forward"]
    ours_all, theirs_all = [], []
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as d:
        os.chdir(d)  # ppvideo's logger writes .log.txt into the working directory
        try:
            if a.arch == "pptsmv2_lcnetv2":
                prefix = os.path.join(d, "pptsmv2")
                export(prefix)
                timer = paddle_timer(prefix, a.threads)
            else:
                timer = timesformer_timer(a.threads, a.frames)
            for _ in range(a.rounds):
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
                ours_all.append(json.loads(out.stdout)["forward_s"])
                theirs_all.append(timer(a.reps))
        finally:
            os.chdir(cwd)
    ratios = [o / t for o, t in zip(ours_all, theirs_all)]
    ours, theirs, ratio = statistics.median(ours_all), statistics.median(theirs_all), statistics.median(ratios)
    path = "inference predictor, oneDNN on" if a.arch == "pptsmv2_lcnetv2" else "dynamic graph, no_grad"
    row = {"arch": a.arch, "input": f"{a.frames}x{SIZE}", "vidkit_forward_s": ours, "paddle_path": path,
           "paddle_forward_s": theirs, "forward_ratio": ratio, "round_ratios": ratios}
    print(f"\n{a.arch}, CPU, {a.threads} threads, batch 1, forward, median of {a.reps} per round, ratio the median "
          f"of {a.rounds} alternating rounds (Paddle {paddle.__version__}: {path}):")
    print(f"{'model':20} {'input':6} {'vidkit fwd':>11} {'paddle fwd':>11} {'ratio':>6}")
    print(f"{row['arch']:20} {row['input']:6} {ours:11.3f} {theirs:11.3f} {ratio:6.2f}  "
          f"({' '.join(f'{x:.2f}' for x in ratios)})")
    print(f"load average: {os.getloadavg()[0]:.2f} (1-min)")
    with open(a.json, "w") as f:
        json.dump({"threads": a.threads, "reps": a.reps, "rounds": a.rounds, "paddle": paddle.__version__, "rows": [row]}, f, indent=1)


if __name__ == "__main__":
    main()
