"""A 2-hour video through `vsample --fps R | vfeat` (or, with --window W --stride S,
`| vclassify --window W --stride S`: window-by-window recognition, issue 22 point 2): peak
resident memory of each tool (the kernel's count, from wait4) and the rate over the run in ten
equal stretches of time, to show that memory does not grow with the video's length and the rate
holds (issue 19 point 1).

    python3 scripts/bench_long.py --bin target/debug --video long2h.mp4 --model m.safetensors \
        --json target/bench/long.json
    python3 scripts/bench_long.py --bin target/debug --video long2h.mp4 --model tsm_r50.safetensors \
        --fps 4 --window 8 --stride 1 --json target/bench/long_windows.json

Standard library only. The rate of a stretch is the bytes vsample wrote into the pipe in it
(/proc/PID/io wchar), in frames: the pipe holds 64 KiB, so that is the rate vfeat consumed them.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def read_wchar(pid):
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def run():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--video", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--fps", default="5")
    ap.add_argument("--size", default="128")
    ap.add_argument("--crop-size", default="112")
    ap.add_argument("--out", default=None, help="feature store to write (default: beside the video)")
    ap.add_argument("--window", default=None, help="classify windows of this many seconds (vclassify)")
    ap.add_argument("--stride", default="1", help="with --window: a window every this many seconds")
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    vsample_cmd = [os.path.join(a.bin, "vsample"), a.video, "--fps", a.fps, "--size", a.size,
                   "--crop-size", a.crop_size, "-q"]
    if a.window:
        tool = "vclassify"
        out = a.out or os.path.splitext(a.video)[0] + "_windows.jsonl"
        vfeat_cmd = [os.path.join(a.bin, "vclassify"), "--model", a.model, "--window", a.window,
                     "--stride", a.stride, "-q", "-o", out]
    else:
        tool = "vfeat"
        out = a.out or os.path.splitext(a.video)[0] + "_features.h5"
        vfeat_cmd = [os.path.join(a.bin, "vfeat"), "--model", a.model, "-o", out]
    load = open("/proc/loadavg").read().split()[0]
    r, w = os.pipe()
    t0 = time.monotonic()
    vs = os.posix_spawn(vsample_cmd[0], vsample_cmd, os.environ,
                        file_actions=[(os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_CLOSE, r)])
    vf = os.posix_spawn(vfeat_cmd[0], vfeat_cmd, os.environ,
                        file_actions=[(os.POSIX_SPAWN_DUP2, r, 0), (os.POSIX_SPAWN_CLOSE, w)])
    os.close(r)
    os.close(w)
    samples = []  # (seconds, bytes vsample has written)
    status = {}
    while len(status) < 2:
        for pid in (vs, vf):
            if pid in status:
                continue
            # WNOHANG: reap with the child's own resource usage when it has ended.
            got, st, usage = os.wait4(pid, os.WNOHANG)
            if got == pid:
                status[pid] = (os.waitstatus_to_exitcode(st), usage.ru_maxrss * 1024, time.monotonic() - t0)
        if vs not in status:
            wc = read_wchar(vs)
            if wc is not None:
                samples.append((time.monotonic() - t0, wc))
        time.sleep(0.5)
    total_s = time.monotonic() - t0
    (vs_code, vs_peak, vs_end), (vf_code, vf_peak, _) = status[vs], status[vf]
    if vs_code != 0 or vf_code != 0:
        sys.exit(f"bench_long: vsample exited {vs_code}, {tool} {vf_code}")
    # Frames written: vfeat's store holds one row per frame; count them from the summary instead
    # of reading HDF5 here (stdlib only): 5 frames per second of the video's duration.
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "stream=nb_frames,r_frame_rate", "-of", "json", a.video],
                           capture_output=True, text=True, check=True)
    st = json.loads(probe.stdout)["streams"][0]
    num, den = (int(x) for x in st["r_frame_rate"].split("/"))
    frames = int(st["nb_frames"]) * float(a.fps) * den // num
    total_bytes = samples[-1][1] if samples else 0
    stretches = []
    if total_bytes and len(samples) > 20:
        span = samples[-1][0] - samples[0][0]
        for k in range(10):
            lo, hi = samples[0][0] + span * k / 10, samples[0][0] + span * (k + 1) / 10
            inside = [s for s in samples if lo <= s[0] <= hi]
            if len(inside) >= 2:
                db = inside[-1][1] - inside[0][1]
                dt = inside[-1][0] - inside[0][0]
                stretches.append(round(db / total_bytes * frames / dt, 1))
    steady = min(stretches[1:-1]) / max(stretches[1:-1]) if len(stretches) >= 4 else None
    result = {
        "video": os.path.basename(a.video), "fps": float(a.fps), "frames": int(frames),
        "size": f"short side {a.size}, crop {a.crop_size}", "model": os.path.basename(a.model),
        "seconds": round(total_s, 1), "frames_per_s": round(frames / total_s, 1),
        "vsample_peak_rss_mb": round(vs_peak / 2**20, 1), f"{tool}_peak_rss_mb": round(vf_peak / 2**20, 1),
        "pipeline_peak_rss_mb": round((vs_peak + vf_peak) / 2**20, 1),
        "frames_per_s_by_tenth": stretches, "steadiness_min_over_max": steady and round(steady, 2),
        "load_before": load,
    }
    if a.window:
        with open(out) as f:
            result["windows"] = sum(1 for _ in f)
        result["windows_per_s"] = round(result["windows"] / total_s, 2)
        result["window_s"], result["stride_s"] = float(a.window), float(a.stride)
    with open(a.json, "w") as f:
        json.dump(result, f, indent=1)
    print(f"long video: {result['frames']} frames of {result['video']} at {a.fps}/s in {total_s:.0f} s "
          f"({result['frames_per_s']} frames/s"
          + (f", {result['windows']} windows, {result['windows_per_s']}/s" if a.window else "")
          + f"); peak RSS vsample {result['vsample_peak_rss_mb']} MB, "
          f"{tool} {result[tool + '_peak_rss_mb']} MB (target: pipeline <= 1024 MB); "
          f"rate by tenth of the run {stretches} (min/max of the middle eight {result['steadiness_min_over_max']})")


if __name__ == "__main__":
    run()
