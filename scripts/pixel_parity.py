#!/usr/bin/env python3
"""Pixel parity of vsample's frames against the Python decoders users already trust.

    pixel_parity.py --native NATIVE.clips [--resized RESIZED.clips] [--json OUT.json]

Each input is a clip stream (DESIGN.md §2.1) written by vsample: `--native` with `--crop none`
and no `--size`, `--resized` with `--size S --crop none`, over the same videos with the same
sampler, so each record names the source frames it holds (`indices`). For every video this
decodes those frames again with PyAV (sequential decode, frame n = n-th decoded frame, which is
what ffmpeg's `select=eq(n,...)` counts) and with decord (`get_batch`, its own frame index), then
reports per video:

* native: max / mean absolute difference per channel between vsample and each peer, over the
  frames where the peers agree with each other (within ±2): those are the frames a test may
  assert on. Frames where the peers disagree (VFR, odd rates, seeking in some containers) are
  counted and left out of the verdict.
* resized: vsample (ffmpeg's bilinear swscale, which resamples in YUV and widens its kernel when
  downscaling) against (a) the agreed native peer frame resized with cv2.resize INTER_LINEAR and
  INTER_AREA, as a user's Python pipeline would, and (b) PyAV's own swscale at the same size with
  the same BILINEAR flag (the same algorithm, another libswscale version): mean, 99th percentile
  and max absolute difference, over the frames where the peers agree.

Rotation: ffmpeg autorotates by the display matrix. decord 0.6.0 does too; PyAV returns the coded
frame, so its frames are rotated here the way ffmpeg's `transpose`/`hflip,vflip` filters do it.
Cropping: libavcodec crops the coded frame to the picture only as far as keeps the data aligned,
unless asked for unaligned cropping (`-flags unaligned`). A Theora file here is coded 224 wide with
a 214-wide picture: aligned cropping leaves 218 (4 black columns on the left), which PyAV and
torchcodec return by default (and vsample too, as of this writing); ffprobe reports 214. PyAV is
asked for the default first; if vsample's frames have another size, PyAV decodes again with
unaligned cropping, and the result says so (`pyav_unaligned_crop`).

Prints a table to stderr and one JSON object per video (a list) to --json (or stdout).
Needs the decode tier of the peers: `bash scripts/peers.sh target/peers decode`.
"""

import argparse
import json
import subprocess
import sys

import numpy as np

# The peers agree with each other when every channel of every pixel is within this.
PEER_AGREE = 2


def read_stream(path):
    """Yields (header, array) for each record of a clip stream."""
    with open(path, "rb") as f:
        while True:
            line = f.readline()
            if not line:
                return
            header = json.loads(line)
            yield header, np.lib.format.read_array(f)


def display_rotation(path):
    """Clockwise degrees ffmpeg rotates by when autorotating (fftools' get_rotation)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream_side_data=rotation:stream_tags=rotate", "-of", "json", path],
        capture_output=True, check=False, text=True)
    try:
        stream = json.loads(out.stdout)["streams"][0]
    except (ValueError, KeyError, IndexError):
        return 0
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            # The display matrix's rotation is counter-clockwise; ffmpeg turns it back.
            return int(round(-float(side["rotation"]))) % 360
    tag = stream.get("tags", {}).get("rotate")
    return int(round(float(tag))) % 360 if tag else 0


def rotate(frame, theta):
    if theta == 90:
        return np.ascontiguousarray(np.rot90(frame, k=-1))  # transpose=clock
    if theta == 180:
        return np.ascontiguousarray(frame[::-1, ::-1])  # hflip,vflip
    if theta == 270:
        return np.ascontiguousarray(np.rot90(frame, k=1))  # transpose=cclock
    return frame


def pyav_frames(path, wanted, theta, resize=None, unaligned=False):
    """({n: frame}, {n: frame scaled by swscale BILINEAR to resize=(w, h)}, frames decoded) for
    the wanted decoded-frame numbers, rotated as ffmpeg autorotates."""
    import av

    frames, scaled, n = {}, {}, 0
    if resize and theta in (90, 270):
        resize = (resize[1], resize[0])  # PyAV scales the coded frame, rotated afterwards
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if unaligned:
            stream.codec_context.flags |= av.codec.context.Flags.unaligned
        for frame in container.decode(stream):
            if n in wanted:
                frames[n] = rotate(frame.to_ndarray(format="rgb24"), theta)
                if resize:
                    scaled[n] = rotate(frame.to_ndarray(
                        width=resize[0], height=resize[1], format="rgb24", interpolation="BILINEAR"), theta)
            n += 1
    return frames, scaled, n


def decord_frames(path, wanted):
    """({i: frame}, len(VideoReader)); decord 0.6.0 autorotates like ffmpeg."""
    import decord

    decord.logging.set_level(decord.logging.QUIET)
    vr = decord.VideoReader(path, ctx=decord.cpu(0))
    count = len(vr)
    idx = sorted(i for i in wanted if i < count)
    frames = {}
    if idx:
        batch = vr.get_batch(idx).asnumpy()
        frames = {i: batch[k] for k, i in enumerate(idx)}
    return frames, count


def absdiff(a, b):
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def compare(records, refs):
    """Statistics of |vsample - reference| over every frame of `records` that `refs` ({source
    frame: array}) holds: max / mean / p99 per channel value, the share of values over ±2, how many
    frames are exactly equal, and how many have another shape (counted, left out of the rest)."""
    diffs, shape_mismatch = [], 0
    for header, arr in records:
        for t, i in enumerate(header["indices"]):
            if i in refs:
                if refs[i].shape != arr[t].shape:
                    shape_mismatch += 1
                else:
                    diffs.append(absdiff(arr[t], refs[i]))
    if not diffs:
        return {"frames": 0, "shape_mismatch": shape_mismatch} if shape_mismatch else None
    flat = np.concatenate([d.ravel() for d in diffs])
    return {
        "frames": len(diffs),
        "shape_mismatch": shape_mismatch,
        "exact_frames": int(sum(int(d.max()) == 0 for d in diffs)),
        "max": int(flat.max()),
        "mean": round(float(flat.mean()), 4),
        "p99": float(np.percentile(flat, 99)),
        "over2": round(float((flat > 2).mean()), 6),
    }


def compare_video(video, native, resized):
    """native/resized: lists of (header, array) records of this video."""
    import cv2

    theta = display_rotation(video)
    wanted = set()
    for header, _ in native + resized:
        wanted.update(int(i) for i in header["indices"])
    result = {"video": video, "rotation": theta, "indices": sorted(wanted), "counts": {}, "errors": {}}
    resize = (resized[0][1].shape[2], resized[0][1].shape[1]) if resized else None
    peers, pyav_scaled = {}, {}
    try:
        peers["pyav"], pyav_scaled, result["counts"]["pyav"] = pyav_frames(video, wanted, theta, resize)
        shape = native[0][1].shape[1:] if native else None
        if shape and any(f.shape != shape for f in peers["pyav"].values()):
            again = pyav_frames(video, wanted, theta, resize, unaligned=True)
            if all(f.shape == shape for f in again[0].values()):
                peers["pyav"], pyav_scaled, result["counts"]["pyav"] = again
                result["pyav_unaligned_crop"] = True
    except Exception as e:  # a peer that cannot read the file is reported, not fatal
        result["errors"]["pyav"] = f"{type(e).__name__}: {e}"
    try:
        peers["decord"], result["counts"]["decord"] = decord_frames(video, wanted)
    except Exception as e:
        result["errors"]["decord"] = f"{type(e).__name__}: {e}"

    # The frames on which the peers that opened the file agree (within ±PEER_AGREE, same shape).
    # When only one peer can open the file, nothing contradicts it and its frames count.
    agreed, disagreed = {}, []
    for i in sorted(wanted):
        have = [peers[p][i] for p in ("pyav", "decord") if p in peers and i in peers[p]]
        if not have or (len(have) == 2 and (have[0].shape != have[1].shape
                                            or int(absdiff(have[0], have[1]).max()) > PEER_AGREE)):
            disagreed.append(i)
        else:
            agreed[i] = have[0]
    result["peers_agree"] = sorted(agreed)
    result["peers_disagree"] = disagreed
    if "pyav" in peers and "decord" in peers:
        # The peers against each other, on the sampled frames, as a vsample-shaped record.
        idx = sorted(set(peers["pyav"]) & set(peers["decord"]))
        if idx:
            fake = [({"indices": idx}, [peers["pyav"][i] for i in idx])]
            result["pyav_vs_decord"] = compare(fake, peers["decord"])

    if native:
        result["native"] = {
            "shape": list(native[0][1].shape[1:]),
            "pyav": compare(native, peers.get("pyav", {})),
            "decord": compare(native, peers.get("decord", {})),
            "agreed": compare(native, agreed),
        }

    if resized:
        out = {"shape": list(resized[0][1].shape[1:])}
        h, w = resized[0][1].shape[1:3]
        for name, interp in (("cv2_linear", cv2.INTER_LINEAR), ("cv2_area", cv2.INTER_AREA)):
            refs = {i: cv2.resize(f, (w, h), interpolation=interp) for i, f in agreed.items()}
            out[name] = compare(resized, refs)
        out["pyav_bilinear"] = compare(resized, {i: f for i, f in pyav_scaled.items() if i in agreed})
        result["resized"] = out
    return result


def fmt(s, keys=("max", "mean")):
    if not s:
        return "-"
    if not s["frames"]:
        return "shape!"
    return "/".join(f"{s[k]:g}" for k in keys)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--native", help="stream from vsample --crop none (native size)")
    ap.add_argument("--resized", help="stream from vsample --size S --crop none")
    ap.add_argument("--json", help="write the per-video results here (default: stdout)")
    args = ap.parse_args()
    if not args.native and not args.resized:
        ap.error("give --native and/or --resized")

    by_video = {}
    for kind, path in (("native", args.native), ("resized", args.resized)):
        if path:
            for header, arr in read_stream(path):
                by_video.setdefault(header["video"], {"native": [], "resized": []})[kind].append((header, arr))

    results = []
    k3 = ("mean", "p99", "max")
    print(f"{'video':36} {'rot':>3} {'frames':>9} {'agree':>5} {'native vs: pyav':>15} {'decord':>9} "
          f"{'agreed':>9} {'resized vs: swscale':>19} {'cv2 linear':>14} {'cv2 area':>14}", file=sys.stderr)
    print(f"{'':36} {'':>3} {'pyav/dec':>9} {'':>5} {'max/mean':>15} {'max/mean':>9} {'max/mean':>9} "
          f"{'mean/p99/max':>19} {'mean/p99/max':>14} {'mean/p99/max':>14}", file=sys.stderr)
    for video, recs in by_video.items():
        r = compare_video(video, recs["native"], recs["resized"])
        results.append(r)
        n, z, c = r.get("native", {}), r.get("resized", {}), r["counts"]
        counts = f"{c.get('pyav', '-')}/{c.get('decord', '-')}"
        agree = f"{len(r['peers_agree'])}/{len(r['indices'])}"
        print(f"{video[-36:]:36} {r['rotation']:>3} {counts:>9} {agree:>5} {fmt(n.get('pyav')):>15} "
              f"{fmt(n.get('decord')):>9} {fmt(n.get('agreed')):>9} {fmt(z.get('pyav_bilinear'), k3):>19} "
              f"{fmt(z.get('cv2_linear'), k3):>14} {fmt(z.get('cv2_area'), k3):>14}", file=sys.stderr)
        for peer, err in r["errors"].items():
            print(f"    {peer}: {err[:150]}", file=sys.stderr)
    text = json.dumps(results, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
