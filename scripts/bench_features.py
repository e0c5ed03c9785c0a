"""`make bench`, features: vfeat against torchvision's ResNet-50 used as a feature extractor
(same weights, same frames, same threads), and the HDF5 feature store against h5py (same data,
same chunking and filters), alternating; ratios are vidkit time / peer time (below 1.0: vidkit
is faster).

    python bench_features.py --bin BIN_DIR --featstore CMD --dir DIR --threads 2 --json OUT
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import h5py
import numpy as np
import torch
import torchvision

MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)  # vidkit's default model mean/std
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


def read_stream(path):
    """[(header, array)] of a clip stream (man vidkit-stream.5)."""
    out = []
    with open(path, "rb") as f:
        while line := f.readline():
            out.append((json.loads(line), np.lib.format.read_array(f)))
    return out


def write_stream(path, records):
    with open(path, "wb") as f:
        for h, a in records:
            f.write((json.dumps(h, separators=(",", ":")) + "\n").encode())
            np.lib.format.write_array(f, a)


def run(cmd, env=None):
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)


def extraction(a, bin_dir):
    """vfeat frames/s for tsn_r50 at 224 against torchvision's ResNet-50 (fc removed)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None).eval()
    pth, model = os.path.join(a.dir, "feat_r50.pth"), os.path.join(a.dir, "feat_r50.safetensors")
    torch.save(net.state_dict(), pth)
    run([os.path.join(bin_dir, "vconvert"), "--arch", "tsn_r50", "-o", "num_classes=1000", pth, model])
    net.fc = torch.nn.Identity()
    frames = os.path.join(a.dir, "feat_frames.vks")
    run([os.path.join(bin_dir, "vsample"), os.path.join(a.dir, "240p.mp4"), "--frames", str(a.frames),
         "--size", "224", "--crop-size", "224", "-q", "-o", frames])
    out = os.path.join(a.dir, "feat_out.vks")
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    ours, theirs = [], []
    for _ in range(a.reps):
        # vfeat's own timing: from the first record read to the last feature written (the model
        # file load and process start are left out, as the model build is on the PyTorch side).
        err = run([os.path.join(bin_dir, "vfeat"), "--model", model, "--batch", str(a.batch), frames, "-o", out],
                  env=env).stderr
        ours.append(float(err.rsplit("(", 1)[1].split(" frames/s")[0]))
        t = time.perf_counter()
        feats = []
        with torch.no_grad():
            for _, clip in read_stream(frames):
                x = torch.from_numpy(((clip.astype(np.float32) - MEAN) / STD).transpose(0, 3, 1, 2).copy())
                for s in range(0, len(x), a.batch):
                    feats.append(net(x[s:s + a.batch]))
        theirs.append(a.frames / (time.perf_counter() - t))
    want = torch.cat(feats).numpy()
    got = read_stream(out)[0][1]
    rel = float(np.abs(got - want).max() / np.abs(want).max())
    fo, ft = statistics.median(ours), statistics.median(theirs)
    return {"model": "tsn_r50 / torchvision resnet50", "input": f"{a.frames}x224, batch {a.batch}",
            "vidkit_frames_per_s": fo, "torch_frames_per_s": ft, "ratio": ft / fo, "max_rel_diff": rel}


def h5py_write(path, videos):
    with h5py.File(path, "w") as f:
        g = f.create_group("videos")
        for vid, label, x in videos:
            v = g.create_group(vid.replace("/", "%2F"))
            v.attrs["video"] = vid
            v.attrs["label"] = label
            rows = max(1, min(len(x), (1 << 20) // (x.shape[1] * 4)))  # vidkit's chunking
            v.create_dataset("rgb", data=x, chunks=(rows, x.shape[1]), compression="gzip",
                             compression_opts=4, shuffle=True)


def h5py_read(path):
    n = 0
    with h5py.File(path, "r") as f:
        for _, v in f["videos"].items():
            _ = (v.attrs["video"], v.attrs.get("label"))
            n += v["rgb"][()].nbytes
    return n


def store(a, featstore):
    """Feature-store write and read MB/s, vidkit against h5py (float32, shuffle + gzip 4)."""
    rng = np.random.default_rng(0)
    # Post-ReLU-like features: about half zeros, as pooled CNN features are.
    videos = [(f"dir/v{i:03d}.mp4", i % 10, np.maximum(rng.standard_normal((a.steps, 2048), dtype=np.float32), 0))
              for i in range(a.videos)]
    src = os.path.join(a.dir, "store_src.vks")
    write_stream(src, [({"kind": "features", "video": v, "label": l, "layout": "TC"}, x) for v, l, x in videos])
    ours_h5, theirs_h5 = os.path.join(a.dir, "store_vidkit.h5"), os.path.join(a.dir, "store_h5py.h5")
    mb = sum(x.nbytes for _, _, x in videos) / 1e6
    w_ours, w_theirs, r_ours, r_theirs = [], [], [], []
    for _ in range(a.reps):
        w_ours.append(json.loads(run([featstore, "write", src, ours_h5, "1"]).stdout)["seconds"])
        t = time.perf_counter()
        h5py_write(theirs_h5, videos)
        w_theirs.append(time.perf_counter() - t)
        # Both read the same file (vidkit's).
        r_ours.append(json.loads(run([featstore, "read", ours_h5, "1"]).stdout)["seconds"])
        t = time.perf_counter()
        assert h5py_read(ours_h5) == mb * 1e6
        r_theirs.append(time.perf_counter() - t)
    rows = []
    for op, ours, theirs in [("write", w_ours, w_theirs), ("read", r_ours, r_theirs)]:
        so, st = statistics.median(ours), statistics.median(theirs)
        rows.append({"op": op, "data": f"{a.videos} x [{a.steps}, 2048] f32, {mb:.0f} MB",
                     "vidkit_mb_per_s": mb / so, "h5py_mb_per_s": mb / st, "ratio": so / st})
    sizes = {"vidkit_file_mb": os.path.getsize(ours_h5) / 1e6, "h5py_file_mb": os.path.getsize(theirs_h5) / 1e6}
    return rows, sizes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="directory of the built tools (vfeat, vsample, vconvert)")
    ap.add_argument("--featstore", required=True, help="path of the bench_featstore example binary")
    ap.add_argument("--dir", required=True, help="bench input directory (holds 240p.mp4)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--videos", type=int, default=48)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ext = extraction(a, a.bin)
    rows, sizes = store(a, a.featstore)
    print(f"\nFeatures, CPU, {a.threads} threads, median of {a.reps} (ratio: vidkit time / peer time):")
    print(f"{'extractor':32} {'input':18} {'vfeat fr/s':>10} {'torch fr/s':>10} {'ratio':>6} {'max rel diff':>12}")
    print(f"{ext['model']:32} {ext['input']:18} {ext['vidkit_frames_per_s']:10.2f} {ext['torch_frames_per_s']:10.2f}"
          f" {ext['ratio']:6.2f} {ext['max_rel_diff']:12.1e}")
    print(f"{'store':6} {'data':32} {'vidkit MB/s':>11} {'h5py MB/s':>10} {'ratio':>6}")
    for r in rows:
        print(f"{r['op']:6} {r['data']:32} {r['vidkit_mb_per_s']:11.1f} {r['h5py_mb_per_s']:10.1f} {r['ratio']:6.2f}")
    print(f"file sizes: vidkit {sizes['vidkit_file_mb']:.1f} MB, h5py {sizes['h5py_file_mb']:.1f} MB")
    print(f"load average: {os.getloadavg()[0]:.2f} (1-min)")
    with open(a.json, "w") as f:
        json.dump({"threads": a.threads, "reps": a.reps, "extraction": ext, "store": rows, **sizes}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
