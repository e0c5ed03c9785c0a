#!/usr/bin/env python3
"""Decoding benchmark: vsample against decord, PyAV, OpenCV and torchcodec (`make bench`).

    bench_decode.py --vsample BIN/vsample --dir target/bench [--reps 5] [--json decode.json]

Task, per video: TSN test-mode segment sampling of N frames (8, 16) to uint8 RGB at native size,
timed from opening the file to the frames in memory. Indices follow MMAction2's SampleFrames in
test mode: `avg = L / N; idx = int(avg * i + avg / 2)` (`(base_offsets + avg_interval / 2)
.astype(int)`), with L the frame count each backend reads from the container, so counting frames
is part of the cost; vsample runs with `--sampler segment-mmaction`, which uses the same formula,
and the script checks that every backend returned the same indices and pixels.

* vsample: the whole process (start, ffprobe, ffmpeg, writing the clip stream) until its output
  has been read from a pipe and parsed into numpy arrays.
* decord: VideoReader + get_batch. PyAV: thread_type AUTO, decode forward to the last wanted
  frame; "pyav seek": a seek to each wanted frame's timestamp. OpenCV: grab() every frame,
  retrieve() the wanted ones, BGR→RGB. torchcodec: VideoDecoder(NHWC, ffmpeg threads auto),
  get_frames_at.

Backends alternate within each repetition (order rotated), medians of --reps runs are reported,
with the ratio vsample / best peer. Then throughput over a batch of 50 240p videos: `vsample -j 2`
over all of them against the best peer on 240p in a 2-process multiprocessing Pool (workers
started before timing, like persistent DataLoader workers).
Prints a table and writes JSON; notes the load average (the machine is shared: compare ratios).
"""

import argparse
import gc
import io
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import time

import av
import cv2
import decord
import numpy as np
import torch
import torchcodec
from torchcodec.decoders import VideoDecoder

VIDEOS = [("720p.mp4", "1280x720 30 fps h264, 10 s, default GOP"),
          ("240p.mp4", "320x240 25 fps h264, 10 s"),
          ("256p_mpeg4.avi", "340x256 25 fps mpeg4 avi, 10 s")]
FRAMES = (8, 16)
VSAMPLE = None  # set in main; module-level so Pool workers see it


def tsn_test_indices(num_frames, n):
    """MMAction2 SampleFrames, test mode: the middle frame of each of n equal segments."""
    avg = num_frames / n
    return [int(avg * i + avg / 2) for i in range(n)]


def read_stream_bytes(data):
    """[(header, array)] of a clip stream held in memory."""
    f, out = io.BytesIO(data), []
    while True:
        line = f.readline()
        if not line:
            return out
        out.append((json.loads(line), np.lib.format.read_array(f)))


def run_vsample(paths, n, jobs=1):
    cmd = [VSAMPLE, *paths, "--sampler", "segment-mmaction", "--frames", str(n), "--crop", "none", "-q"]
    if jobs > 1:
        cmd += ["-j", str(jobs)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"vsample failed: {proc.stderr.decode(errors='replace').strip()}")
    return read_stream_bytes(proc.stdout)


def b_vsample(path, n):
    (header, arr), = run_vsample([path], n)
    return header["indices"], arr


def b_decord(path, n):
    vr = decord.VideoReader(path, ctx=decord.cpu(0))
    idx = tsn_test_indices(len(vr), n)
    return idx, vr.get_batch(idx).asnumpy()


def b_pyav(path, n):
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        idx = tsn_test_indices(s.frames, n)
        wanted, out, k = set(idx), {}, 0
        for frame in c.decode(s):
            if k in wanted:
                out[k] = frame.to_ndarray(format="rgb24")
                if len(out) == len(wanted):
                    break
            k += 1
    return idx, np.stack([out[i] for i in idx])


def b_pyav_seek(path, n):
    """Seek to each wanted frame's timestamp (constant frame rate assumed, as here)."""
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        idx = tsn_test_indices(s.frames, n)
        rate, tb, start = s.average_rate, s.time_base, s.start_time or 0
        out = []
        for i in idx:
            target = start + int(round(i / rate / tb))
            c.seek(target, stream=s, backward=True)
            for frame in c.decode(s):
                if frame.pts is not None and frame.pts >= target:
                    out.append(frame.to_ndarray(format="rgb24"))
                    break
    return idx, np.stack(out)


def b_opencv(path, n):
    cap = cv2.VideoCapture(path)
    try:
        idx = tsn_test_indices(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), n)
        wanted, out = set(idx), {}
        for k in range(idx[-1] + 1):
            if not cap.grab():
                break
            if k in wanted:
                ok, bgr = cap.retrieve()
                if ok:
                    out[k] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()
    return idx, np.stack([out[i] for i in idx])


def b_torchcodec(path, n):
    dec = VideoDecoder(path, dimension_order="NHWC", num_ffmpeg_threads=0)
    idx = tsn_test_indices(dec.metadata.num_frames, n)
    return idx, dec.get_frames_at(idx).data.numpy()


BACKENDS = {"vsample": b_vsample, "decord": b_decord, "pyav": b_pyav, "pyav_seek": b_pyav_seek,
            "opencv": b_opencv, "torchcodec": b_torchcodec}
PEERS = [b for b in BACKENDS if b != "vsample"]


def _peer_job(job):
    name, path, n = job
    return BACKENDS[name](path, n)[1]


def timed(fn, *args):
    gc.collect()
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


def bench_single(directory, reps):
    rows = []
    for name, desc in VIDEOS:
        path = os.path.join(directory, name)
        for n in FRAMES:
            times = {b: [] for b in BACKENDS}
            check = {}
            order = list(BACKENDS)
            for r in range(reps):
                for b in order[r % len(order):] + order[:r % len(order)]:
                    try:
                        dt, (idx, frames) = timed(BACKENDS[b], path, n)
                    except Exception as e:  # a backend that fails is reported, not fatal
                        check[b] = {"error": f"{type(e).__name__}: {e}"}
                        continue
                    times[b].append(dt)
                    if b not in check:
                        check[b] = {"indices": list(map(int, idx)), "frames": frames}
            ref = check.get("pyav", {})
            agreement = {}
            for b, c in check.items():
                if "error" in c:
                    agreement[b] = c["error"]
                elif "frames" not in ref:
                    agreement[b] = "no PyAV reference"
                elif c["indices"] != ref["indices"]:
                    agreement[b] = f"other indices {c['indices']}"
                elif c["frames"].shape != ref["frames"].shape:
                    agreement[b] = f"other shape {c['frames'].shape}"
                else:
                    d = int(np.abs(c["frames"].astype(np.int16) - ref["frames"]).max())
                    agreement[b] = "identical" if d == 0 else f"max diff {d}"
            med = {b: statistics.median(t) for b, t in times.items() if len(t) == reps}
            peers = {b: t for b, t in med.items() if b != "vsample"}
            best = min(peers, key=peers.get) if peers else None
            rows.append({
                "video": name, "desc": desc, "frames": n, "median_s": med,
                "runs_s": times, "best_peer": best,
                "ratio_vsample_over_best": (med["vsample"] / peers[best]) if best and "vsample" in med else None,
                "vs_pyav": agreement, "indices": check.get("pyav", {}).get("indices"),
            })
            print(f"  {name} {n} frames: " + ", ".join(f"{b} {t:.3f}" for b, t in med.items()), file=sys.stderr)
    return rows


def bench_batch(directory, pool, peer, reps, n=8):
    files = sorted(os.path.join(directory, "batch", f) for f in os.listdir(os.path.join(directory, "batch")))
    times = {"vsample -j 2": [], f"{peer} Pool(2)": []}
    for r in range(reps):
        runs = [("vsample -j 2", lambda: run_vsample(files, n, jobs=2)),
                (f"{peer} Pool(2)", lambda: pool.map(_peer_job, [(peer, f, n) for f in files], chunksize=1))]
        for label, fn in (runs if r % 2 == 0 else runs[::-1]):
            dt, out = timed(fn)
            assert len(out) == len(files), f"{label}: {len(out)} results for {len(files)} videos"
            times[label].append(dt)
    med = {k: statistics.median(v) for k, v in times.items()}
    vps = {k: len(files) / v for k, v in med.items()}
    return {"videos": len(files), "frames": n, "median_s": med, "videos_per_s": vps, "runs_s": times,
            "ratio_vsample_over_peer_time": med["vsample -j 2"] / med[f"{peer} Pool(2)"]}


def main():
    global VSAMPLE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vsample", required=True)
    ap.add_argument("--dir", required=True, help="where bench.sh generated the inputs")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch-reps", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    VSAMPLE = os.path.abspath(args.vsample)
    # Workers first, from a process that has decoded nothing yet (fork after decoder threads is
    # unsafe); they stay idle until the throughput phase.
    pool = mp.get_context("fork").Pool(2)
    load0 = os.getloadavg()
    print(f"decode bench: {os.cpu_count()} cores, load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
          f"{args.reps} reps", file=sys.stderr)
    rows = bench_single(args.dir, args.reps)
    best240 = next(r for r in rows if r["video"] == "240p.mp4" and r["frames"] == 8)["best_peer"]
    batch = bench_batch(args.dir, pool, best240, args.batch_reps)
    pool.close()
    pool.join()
    load1 = os.getloadavg()

    cols = ["vsample"] + PEERS
    print(f"\nTSN test sampling to uint8 RGB at native size, median seconds per video "
          f"({args.reps} runs, alternating):")
    head = f"{'video':16} {'N':>3} " + " ".join(f"{c:>10}" for c in cols) + f" {'best peer':>11} {'vs/best':>8}"
    print(head)
    for r in rows:
        cells = " ".join(f"{r['median_s'][c]:10.3f}" if c in r["median_s"] else f"{'fail':>10}" for c in cols)
        ratio = f"{r['ratio_vsample_over_best']:8.2f}" if r["ratio_vsample_over_best"] else f"{'-':>8}"
        print(f"{r['video']:16} {r['frames']:>3} {cells} {r['best_peer'] or '-':>11} {ratio}")
    odd = {f"{r['video']} {r['frames']}": {b: a for b, a in r["vs_pyav"].items() if a != "identical"} for r in rows}
    odd = {k: v for k, v in odd.items() if v}
    print("frames vs PyAV: " + ("all backends identical (same indices, same pixels)" if not odd else json.dumps(odd)))
    print(f"\nThroughput, {batch['videos']} x 240p videos, {batch['frames']} frames each "
          f"(median of {args.batch_reps}):")
    for k in batch["median_s"]:
        print(f"  {k:24} {batch['median_s'][k]:7.2f} s  {batch['videos_per_s'][k]:6.1f} videos/s")
    print(f"  ratio vsample time / {best240} time: {batch['ratio_vsample_over_peer_time']:.2f}")
    print(f"load average: start {load0[0]:.2f}, end {load1[0]:.2f} (1-min; {os.cpu_count()} cores)")

    if args.json:
        versions = {"av": av.__version__, "decord": decord.__version__, "opencv": cv2.__version__,
                    "torchcodec": torchcodec.__version__, "torch": torch.__version__,
                    "numpy": np.__version__, "python": platform.python_version(),
                    "ffmpeg": subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True)
                    .stdout.splitlines()[0]}
        doc = {"task": "TSN test-mode segment sampling (MMAction2 formula), uint8 RGB, native size, "
                       "open to frames in memory",
               "cores": os.cpu_count(), "load_average_start": load0, "load_average_end": load1,
               "reps": args.reps, "versions": versions, "single": rows, "batch": batch}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
