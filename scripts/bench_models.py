"""`make bench`, models: PyTorch on CPU beside vidkit's bench_models example, same shapes and
thread count, alternating, ratios printed (vidkit time / PyTorch time; below 1.0 is faster).

    python bench_models.py --vidkit CMD --threads 2 --json OUT [--arch tsm_r50 ...]
    python bench_models.py --zoo --vidkit CMD --threads 2 --json OUT [--arch x3d_xs ...]

    python bench_models.py --attention --vidkit CMD --threads 2 --json OUT
    python bench_models.py --stnet --vidkit CMD --threads 2 --json OUT

--stnet: StNet (7 segments × 5 frames at 224², batch 1) against scripts/stnet_ref.py's PyTorch
restatement of the 2019 zoo's fluid code, forward only.

--attention: vidkit's attention (nn::attend, inference) against torch's
scaled_dot_product_attention on the shapes the video transformers run: TimeSformer's spatial
and temporal attention at 8 × 224² (ViT-B, 12 heads of 64), and MViT-B's first block at 16 × 4
and 32 × 3 (25 089 and 50 177 queries over 393 and 785 pooled keys, one head of 96), where
vidkit tiles the rows.

--int8: vidkit's int8 convolutions (calibrated on the input) against PyTorch's int8 (FX post-training
quantization, x86 backend), TSN-R50 8 × 224², forward only, with vidkit's f32 forward in the same rounds
(issue 24).

--bf16 (run with the zoo peers venv): vidkit's --precision bf16 against PyTorch's fastest CPU
mode, torch.autocast("cpu", dtype=torch.bfloat16) with channels_last / channels_last_3d, forward
only, for TSN/TSM-R50 and the zoo (issue 24).

--zoo (run with the zoo peers venv): the 3D CNNs against pytorchvideo's hub models (random
weights), forward only, batch 1, each at its zoo input (T × crop², as vidkit's config says).

Each model pair runs --rounds times in alternation (vidkit's median of --reps, then the peer's),
and the row reports the median of the per-round ratios: on a shared machine whose speed drifts by
±30 % over minutes, a ratio of two timings taken seconds apart is what stays comparable.
"""
import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import torch  # noqa: E402
import torchvision  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from export_torch_parity import Recognizer  # noqa: E402  (our TSN/TSM wrapper)


def torch_timer(arch, frames, size):
    """The TSN/TSM recognizer built once; the returned function times `reps` forwards and steps."""
    family, depth = arch.split("_r")
    net = Recognizer(getattr(torchvision.models, f"resnet{depth}")(weights=None), 400, frames, family == "tsm")
    x1 = torch.randn(1, frames, 3, size, size)
    x2 = torch.randn(2, frames, 3, size, size)
    labels = torch.tensor([1, 2])
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    net.eval()
    with torch.no_grad():
        net(x1)

    def times(reps):
        fwd, step = [], []
        for _ in range(reps):
            net.eval()
            t = time.perf_counter()
            with torch.no_grad():
                net(x1)
            fwd.append(time.perf_counter() - t)
            net.train()
            t = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(net(x2), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step.append(time.perf_counter() - t)
        return statistics.median(fwd), statistics.median(step)

    return times


ZOO = ["c2d_r50", "i3d_r50", "slow_r50", "r2plus1d_r50", "csn_r101", "slowfast_r50", "slowfast_r101",
       "x3d_xs", "x3d_s", "x3d_m", "x3d_l", "mvit_base_16x4", "mvit_base_32x3"]


def pytorchvideo_timer(arch, frames, size):
    """The hub model built once: (function timing `reps` forwards, GFLOPs of one)."""
    import warnings

    warnings.filterwarnings("ignore")  # torch.jit deprecation notices on importing pytorchvideo
    from pytorchvideo.models import hub

    net = getattr(hub, arch)(pretrained=False).eval()
    clip = torch.randn(1, 3, frames, size, size)

    def inputs():  # SlowFast: PackPathway (alpha 4); a fresh list per call, the model consumes it
        if not arch.startswith("slowfast"):
            return clip
        return [torch.index_select(clip, 2, torch.linspace(0, frames - 1, frames // 4).long()), clip]

    with torch.no_grad():
        # Multiply-adds count 2 FLOPs here (pytorchvideo's model zoo table counts them once).
        with FlopCounterMode(display=False) as counter:
            net(inputs())

    return forward_timer(lambda: net(inputs()), warm_up=False), counter.get_total_flops() / 1e9


def forward_timer(run, warm_up=True, context=torch.no_grad):
    """times(reps): the median wall time of `run()` over reps calls, inside `context()`, after one
    untimed call when `warm_up`."""

    def times(reps):
        out = []
        with context():
            if warm_up:
                run()
            for _ in range(reps):
                t = time.perf_counter()
                run()
                out.append(time.perf_counter() - t)
        return statistics.median(out)

    return times


def vidkit_run(a, env, arch, frames, size, forward_only):
    cmd = [a.vidkit, arch, str(frames), str(size), str(a.reps)] + (["forward"] if forward_only else [])
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout)


def alternate(a, ours_fn, theirs_fn):
    """--rounds of (vidkit, peer), each a median of --reps: the per-round results of both."""
    ours, theirs = [], []
    for _ in range(a.rounds):
        ours.append(ours_fn())
        theirs.append(theirs_fn())
    return ours, theirs


def median_ratio(ours, theirs):
    return statistics.median(o / t for o, t in zip(ours, theirs))


def zoo_rows(a, env):
    rows = []
    for arch in a.arch or ZOO:
        first = vidkit_run(a, env, arch, 0, 0, True)
        frames, size = first["frames"], first["size"]
        timer, gflops = pytorchvideo_timer(arch, frames, size)
        ours, theirs = alternate(a, lambda: vidkit_run(a, env, arch, frames, size, True)["forward_s"],
                                 lambda: timer(a.reps))
        ratio = median_ratio(ours, theirs)
        rows.append({"arch": arch, "input": f"{frames}x{size}", "params_m": first["params"] / 1e6, "gflops": gflops,
                     "vidkit_forward_s": statistics.median(ours), "pytorchvideo_forward_s": statistics.median(theirs),
                     "forward_ratio": ratio, "round_ratios": [o / t for o, t in zip(ours, theirs)]})
        r = rows[-1]
        print(f"{arch:14} {r['input']:7} {r['params_m']:8.2f} {gflops:7.1f} {r['vidkit_forward_s']:11.3f}"
              f" {r['pytorchvideo_forward_s']:13.3f} {ratio:6.2f}  ({' '.join(f'{x:.2f}' for x in r['round_ratios'])})",
              flush=True)
    return rows


def torch_bf16_timer(arch, frames, size):
    """PyTorch's fastest CPU mode for `arch` (TSN/TSM through our Recognizer wrapper, a zoo model
    through pytorchvideo's hub): torch.autocast("cpu", dtype=torch.bfloat16) with the weights and
    the input in channels_last (channels_last_3d for the 3D models); times `reps` forwards."""
    if arch in ZOO:
        import warnings

        warnings.filterwarnings("ignore")
        from pytorchvideo.models import hub

        net = getattr(hub, arch)(pretrained=False).eval().to(memory_format=torch.channels_last_3d)
        clip = torch.randn(1, 3, frames, size, size).contiguous(memory_format=torch.channels_last_3d)

        def inputs():
            if not arch.startswith("slowfast"):
                return clip
            slow = torch.index_select(clip, 2, torch.linspace(0, frames - 1, frames // 4).long())
            return [slow.contiguous(memory_format=torch.channels_last_3d), clip]
    else:
        family, depth = arch.split("_r")
        net = Recognizer(getattr(torchvision.models, f"resnet{depth}")(weights=None), 400, frames, family == "tsm")
        net = net.eval().to(memory_format=torch.channels_last)
        x1 = torch.randn(1, frames, 3, size, size)

        def inputs():
            return x1

    # The warm-up call lets oneDNN build its kernels.
    def bf16_no_grad():
        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad())
        stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
        return stack

    return forward_timer(lambda: net(inputs()), context=bf16_no_grad)


def bf16_rows(a, env):
    """--bf16: vidkit's --precision bf16 against torch_bf16_timer, forward only, batch 1, at each
    model's bench input (TSN/TSM 8 × 224², a zoo model's own T × crop)."""
    env = dict(env, VK_PRECISION="bf16")
    rows = []
    for arch in a.arch or ["tsn_r50", "tsm_r50"] + ZOO:
        zoo = arch in ZOO
        first = vidkit_run(a, env, arch, 0 if zoo else 8, 0 if zoo else 224, True)
        frames, size = first["frames"], first["size"]
        timer = torch_bf16_timer(arch, frames, size)
        ours, theirs = alternate(a, lambda: vidkit_run(a, env, arch, frames, size, True)["forward_s"],
                                 lambda: timer(a.reps))
        ratio = median_ratio(ours, theirs)
        rows.append({"arch": arch, "input": f"{frames}x{size}", "vidkit_bf16_forward_s": statistics.median(ours),
                     "torch_bf16_forward_s": statistics.median(theirs), "forward_ratio": ratio,
                     "round_ratios": [o / t for o, t in zip(ours, theirs)]})
        r = rows[-1]
        print(f"{arch:14} {r['input']:7} {r['vidkit_bf16_forward_s']:11.3f} {r['torch_bf16_forward_s']:10.3f}"
              f" {ratio:6.2f}  ({' '.join(f'{x:.2f}' for x in r['round_ratios'])})", flush=True)
    return rows


INT8 = ["tsn_r50", "slow_r50", "x3d_s", "mvit_base_16x4"]


def torch_int8_timer(arch, frames, size):
    """`arch` in PyTorch's int8: FX graph mode post-training quantization with the x86 backend's
    default qconfig (per-channel symmetric weights, histogram-observed activations), calibrated
    on the input. TSN-R50: torchvision's ResNet-50 over the clip's frames as a batch; a zoo model:
    pytorchvideo's hub model; MViT: its Linear layers dynamically quantized."""
    import warnings

    warnings.filterwarnings("ignore")
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    if arch.startswith("mvit"):
        # A transformer: PyTorch's int8 path for it is dynamic quantization of the Linear
        # layers (int8 weights, activations quantized per call); FX static quantization does
        # not trace it.
        from pytorchvideo.models import hub

        net = torch.ao.quantization.quantize_dynamic(
            getattr(hub, arch)(pretrained=False).eval(), {torch.nn.Linear}, dtype=torch.qint8)
        x = torch.randn(1, 3, frames, size, size)
        return forward_timer(lambda: net(x))
    if arch in ZOO:
        from pytorchvideo.models import hub

        net = getattr(hub, arch)(pretrained=False).eval()
        x = torch.randn(1, 3, frames, size, size)
    else:
        net = torchvision.models.resnet50(num_classes=400).eval()
        x = torch.randn(frames, 3, size, size)
    prepared = prepare_fx(net, get_default_qconfig_mapping("x86"), example_inputs=(x,))
    with torch.no_grad():
        prepared(x)
    q = convert_fx(prepared)

    return forward_timer(lambda: q(x))


def int8_rows(a, env):
    """--int8: vidkit's int8 (VK_PRECISION=int8: the convolutions quantized, calibrated on the
    input) against torch_int8_timer, forward only, for TSN-R50 at 8 × 224² and two 3D models at
    their zoo inputs; and vidkit's own f32 forward in the same rounds, so each row also says what
    int8 buys over f32 here."""
    rows = []
    int8_env = dict(env, VK_PRECISION="int8")
    for arch in a.arch or INT8:
        first = vidkit_run(a, env, arch, 0, 0, True) if arch in ZOO else {"frames": 8, "size": 224}
        frames, size = first["frames"], first["size"]
        timer = torch_int8_timer(arch, frames, size)
        ours, theirs, f32 = [], [], []
        for _ in range(a.rounds):
            ours.append(vidkit_run(a, int8_env, arch, frames, size, True)["forward_s"])
            theirs.append(timer(a.reps))
            f32.append(vidkit_run(a, env, arch, frames, size, True)["forward_s"])
        row = {"arch": arch, "input": f"{frames}x{size}", "vidkit_int8_forward_s": statistics.median(ours),
               "torch_int8_forward_s": statistics.median(theirs), "vidkit_f32_forward_s": statistics.median(f32),
               "forward_ratio": median_ratio(ours, theirs), "int8_over_f32": median_ratio(ours, f32),
               "round_ratios": [o / t for o, t in zip(ours, theirs)]}
        print(f"{arch:14} {row['input']:7} {row['vidkit_int8_forward_s']:11.3f} {row['torch_int8_forward_s']:10.3f}"
              f" {row['forward_ratio']:6.2f}  ({' '.join(f'{x:.2f}' for x in row['round_ratios'])});"
              f" vidkit int8 / f32 {row['int8_over_f32']:.2f}", flush=True)
        rows.append(row)
    return rows


def stnet_rows(a, env):
    """StNet (the 2019 Paddle zoo's, 7 segments of 5 frames at 224², batch 1) against
    scripts/stnet_ref.py's PyTorch restatement of the fluid code (random weights), forward only."""
    import stnet_ref

    net = stnet_ref.StNet(50, 7, 5, 400).eval()
    clip = torch.randn(1, 7, 15, 224, 224)

    times = forward_timer(lambda: net(clip))

    ours, theirs = alternate(a, lambda: vidkit_run(a, env, "stnet_r50", 35, 224, True)["forward_s"],
                             lambda: times(a.reps))
    row = {"arch": "stnet_r50", "input": "7x5x224", "vidkit_forward_s": statistics.median(ours),
           "torch_forward_s": statistics.median(theirs), "forward_ratio": median_ratio(ours, theirs),
           "round_ratios": [o / t for o, t in zip(ours, theirs)]}
    print(f"{'stnet_r50':10} {row['input']:8} {row['vidkit_forward_s']:11.3f} {row['torch_forward_s']:10.3f}"
          f" {row['forward_ratio']:6.2f}  ({' '.join(f'{x:.2f}' for x in row['round_ratios'])})", flush=True)
    return [row]


# (name, groups, heads, queries, keys, head width)
ATTENTION = [
    ("timesformer space 8x224", 8, 12, 197, 197, 64),
    ("timesformer time 8x224", 196, 12, 8, 8, 64),
    ("mvit16x4 block0", 1, 1, 25089, 393, 96),
    ("mvit32x3 block0", 1, 1, 50177, 785, 96),
]


def sdpa_timer(g, h, nq, nk, d):
    q, k, v = torch.randn(g, h, nq, d), torch.randn(g, h, nk, d), torch.randn(g, h, nk, d)

    return forward_timer(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))


def attention_rows(a, env):
    rows = []
    for name, g, h, nq, nk, d in ATTENTION:
        timer = sdpa_timer(g, h, nq, nk, d)
        cmd = [a.vidkit, "attention"] + [str(x) for x in (g, h, nq, nk, d, a.reps)]
        ours, theirs = alternate(a, lambda: json.loads(subprocess.run(cmd, capture_output=True, text=True, env=env,
                                                                      check=True).stdout)["forward_s"],
                                 lambda: timer(a.reps))
        ratio = median_ratio(ours, theirs)
        rows.append({"attention": name, "shape": [g, h, nq, nk, d], "vidkit_s": statistics.median(ours),
                     "torch_sdpa_s": statistics.median(theirs), "ratio": ratio,
                     "round_ratios": [o / t for o, t in zip(ours, theirs)]})
        r = rows[-1]
        print(f"{name:24} {r['vidkit_s'] * 1e3:10.2f} {r['torch_sdpa_s'] * 1e3:10.2f} {ratio:6.2f}  "
              f"({' '.join(f'{x:.2f}' for x in r['round_ratios'])})", flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vidkit", required=True, help="path of the bench_models example binary")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="alternations of vidkit and the peer per model")
    ap.add_argument("--json", required=True)
    ap.add_argument("--arch", action="append", default=None)
    ap.add_argument("--zoo", action="store_true", help="3D CNNs against pytorchvideo, forward only")
    ap.add_argument("--attention", action="store_true", help="attention alone against torch's SDPA")
    ap.add_argument("--stnet", action="store_true", help="StNet against its PyTorch restatement, forward only")
    ap.add_argument("--bf16", action="store_true",
                    help="--precision bf16 against torch.autocast bf16 + channels_last, forward only")
    ap.add_argument("--int8", action="store_true", help="int8 convolutions against PyTorch's x86 int8, forward only")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.int8 or a.bf16:
        kind, units = ("int8", ("avx2", "avx512_vnni", "amx_int8")) if a.int8 else ("bf16", ("avx512_bf16", "amx_bf16"))
        env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
        flags = " ".join(f for f in units if f in open("/proc/cpuinfo").read())
        print(f"\n{kind} inference, CPU ({flags or f'no {kind} units'}), {a.threads} threads, batch 1, forward, median "
              f"of {a.reps} per round; ratio: median of {a.rounds} alternating rounds:")
        print(f"{'model':14} {'input':7} {'vidkit ' + kind:>11} {'torch ' + kind:>10} {'ratio':>6}", flush=True)
        rows = int8_rows(a, env) if a.int8 else bf16_rows(a, env)
        print(f"load average: {os.getloadavg()[0]:.2f} (1-min)")
        with open(a.json, "w") as f:
            json.dump({"threads": a.threads, "reps": a.reps, "rounds": a.rounds, "cpu_flags": flags, "rows": rows},
                      f, indent=1)
        return
    if a.stnet:
        env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
        print(f"\nStNet, CPU, {a.threads} threads, batch 1, forward, median of {a.reps} per round; ratio: median of "
              f"{a.rounds} alternating rounds:")
        print(f"{'model':10} {'input':8} {'vidkit fwd':>11} {'torch fwd':>10} {'ratio':>6}", flush=True)
        rows = stnet_rows(a, env)
        with open(a.json, "w") as f:
            json.dump({"threads": a.threads, "reps": a.reps, "rounds": a.rounds, "rows": rows}, f, indent=1)
        return
    if a.attention:
        env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
        print(f"\nAttention (inference), CPU, {a.threads} threads, median of {a.reps} per round; ratio: median of "
              f"{a.rounds} alternating rounds:")
        print(f"{'shape':24} {'vidkit ms':>10} {'torch ms':>10} {'ratio':>6}", flush=True)
        rows = attention_rows(a, env)
        with open(a.json, "w") as f:
            json.dump({"threads": a.threads, "reps": a.reps, "rounds": a.rounds, "rows": rows}, f, indent=1)
        return
    if a.zoo:
        env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
        print(f"\nZoo models, CPU, {a.threads} threads, batch 1, forward, median of {a.reps} per round; "
              f"ratio: median of {a.rounds} alternating rounds (each round's ratio in brackets):")
        print(f"{'model':14} {'input':7} {'params M':>8} {'GFLOPs':>7} {'vidkit fwd':>11} {'pytorchvideo':>13} {'ratio':>6}",
              flush=True)
        rows = zoo_rows(a, env)
        print(f"load average: {os.getloadavg()[0]:.2f} (1-min)")
        with open(a.json, "w") as f:
            json.dump({"threads": a.threads, "reps": a.reps, "rounds": a.rounds, "rows": rows}, f, indent=1)
        return
    rows = []
    for arch in a.arch or ["tsn_r50", "tsm_r50"]:
        env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
        timer = torch_timer(arch, 8, 224)
        ours, theirs = alternate(a, lambda: vidkit_run(a, env, arch, 8, 224, False), lambda: timer(a.reps))
        of, os_ = [o["forward_s"] for o in ours], [o["train_step_s"] for o in ours]
        tf, ts = [t[0] for t in theirs], [t[1] for t in theirs]
        rows.append({"arch": arch, "input": "8x224", "vidkit_forward_s": statistics.median(of),
                     "torch_forward_s": statistics.median(tf), "forward_ratio": median_ratio(of, tf),
                     "vidkit_train_step_s": statistics.median(os_), "torch_train_step_s": statistics.median(ts),
                     "train_step_ratio": median_ratio(os_, ts),
                     "round_ratios": {"forward": [o / t for o, t in zip(of, tf)],
                                      "train_step": [o / t for o, t in zip(os_, ts)]}})
    print(f"\nModels, CPU, {a.threads} threads, median of {a.reps} per round (forward: batch 1; train step: 2 clips, "
          f"SGD momentum); ratios: median of {a.rounds} alternating rounds:")
    print(f"{'model':10} {'input':6} {'vidkit fwd':>11} {'torch fwd':>10} {'ratio':>6} {'vidkit step':>12} {'torch step':>11} {'ratio':>6}")
    for r in rows:
        print(f"{r['arch']:10} {r['input']:6} {r['vidkit_forward_s']:11.3f} {r['torch_forward_s']:10.3f} {r['forward_ratio']:6.2f}"
              f" {r['vidkit_train_step_s']:12.3f} {r['torch_train_step_s']:11.3f} {r['train_step_ratio']:6.2f}")
    print(f"load average: {os.getloadavg()[0]:.2f} (1-min)")
    with open(a.json, "w") as f:
        json.dump({"threads": a.threads, "reps": a.reps, "rounds": a.rounds, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
