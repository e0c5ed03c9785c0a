"""`make bench`, PP-TSMv2: vidkit's forward against PaddlePaddle's inference predictor with oneDNN
(MKL-DNN) on, the deployment path PaddleVideo documents (tools/export_model.py, then
paddle.inference). Same input (batch 1, 8 frames, 224²), same thread count; prints the ratio
vidkit time / Paddle time (below 1.0 is faster). Runs in the paddle tier of scripts/peers.sh.

    python bench_paddle.py --vidkit CMD --threads 2 --json OUT [--reps 5] [--rounds 3]

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

    def times(reps):
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            run()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vidkit", required=True, help="path of the bench_models example binary")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="alternations of vidkit and Paddle")
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    # Absolute: the rounds run from a temporary working directory (see below).
    cmd = [os.path.abspath(a.vidkit), "pptsmv2_lcnetv2", str(FRAMES), str(SIZE), str(a.reps), "forward"]
    ours_all, theirs_all = [], []
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as d:
        os.chdir(d)  # ppvideo's logger writes .log.txt into the working directory
        try:
            prefix = os.path.join(d, "pptsmv2")
            export(prefix)
            timer = paddle_timer(prefix, a.threads)
            for _ in range(a.rounds):
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
                ours_all.append(json.loads(out.stdout)["forward_s"])
                theirs_all.append(timer(a.reps))
        finally:
            os.chdir(cwd)
    ratios = [o / t for o, t in zip(ours_all, theirs_all)]
    ours, theirs, ratio = statistics.median(ours_all), statistics.median(theirs_all), statistics.median(ratios)
    row = {"arch": "pptsmv2_lcnetv2", "input": f"{FRAMES}x{SIZE}", "vidkit_forward_s": ours,
           "paddle_onednn_forward_s": theirs, "forward_ratio": ratio, "round_ratios": ratios}
    print(f"\nPP-TSMv2, CPU, {a.threads} threads, batch 1, forward, median of {a.reps} per round, ratio the median "
          f"of {a.rounds} alternating rounds (Paddle {paddle.__version__}: inference predictor, oneDNN on):")
    print(f"{'model':16} {'input':6} {'vidkit fwd':>11} {'paddle fwd':>11} {'ratio':>6}")
    print(f"{row['arch']:16} {row['input']:6} {ours:11.3f} {theirs:11.3f} {ratio:6.2f}  "
          f"({' '.join(f'{x:.2f}' for x in ratios)})")
    print(f"load average: {os.getloadavg()[0]:.2f} (1-min)")
    with open(a.json, "w") as f:
        json.dump({"threads": a.threads, "reps": a.reps, "rounds": a.rounds, "paddle": paddle.__version__, "rows": [row]}, f, indent=1)


if __name__ == "__main__":
    main()
