#!/usr/bin/env python3
"""A small YouTube-8M set in the official format, for `vconvert --lists youtube8m` and
recipes/youtube8m.mk (bins/tests/recipes_youtube8m.rs).

    python scripts/youtube8m_fixture.py OUT [--level frame|video] [--train N] [--val N]
        [--classes K] [--files F] [--seed S] [--id-key id|video_id]

Writes OUT/vocabulary.csv (the official header; one name with a comma inside quotes) and the
TFRecords the official download has: frame level OUT/frame/train/trainNNNN.tfrecord and
OUT/frame/validate/validateNNNN.tfrecord (SequenceExamples: context `id` bytes and `labels`
int64s, feature lists `rgb` and `audio` with one bytes entry of 1024 / 128 uint8s per frame), or
video level OUT/video/{train,validate}/ (Examples: `id`, `labels`, `mean_rgb` 1024 floats,
`mean_audio` 128 floats, the means of the dequantised frames). Records are framed by the
`tfrecord` package's TFRecordWriter (length, masked CRC-32C, data, masked CRC-32C), not by vidkit.

The labels can be learnt from the features: each video has 1-3 of K classes, and each of its
classes raises 16 rgb and 4 audio dimensions of its own (quantised values around 128 plus a bump
of 48) in a random half of the frames. OUT/expected.json holds, for the first training video, its
id, labels and the first frame's rgb and audio (frame level) or mean_rgb (video level) as the
starter code's utils.Dequantize computes them in float32, to check vidkit's values against.
"""
import argparse
import json
import os

import numpy as np
import tfrecord

RGB, AUDIO = 1024, 128


def dequantize(q):
    # google/youtube-8m utils.Dequantize(max 2, min -2), on tf.cast(q, float32): float32 math.
    q = np.asarray(q, dtype=np.float32)
    rng = 2.0 - -2.0
    return q * np.float32(rng / 255.0) + np.float32(rng / 512.0 + -2.0)


def video(rng, classes, frames):
    labels = sorted(rng.choice(classes, size=rng.integers(1, 4), replace=False).tolist())
    rgb = rng.normal(128, 20, size=(frames, RGB))
    audio = rng.normal(128, 20, size=(frames, AUDIO))
    for c in labels:
        hot = rng.random(frames) < 0.5
        hot[rng.integers(frames)] = True
        rgb[hot, 16 * c:16 * (c + 1)] += 48
        audio[hot, 4 * c:4 * (c + 1)] += 48
    q = lambda a: np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return labels, q(rgb), q(audio)


def video_id(rng):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(alphabet[i] for i in rng.integers(len(alphabet), size=4))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--level", choices=["frame", "video"], default="frame")
    ap.add_argument("--train", type=int, default=240)
    ap.add_argument("--val", type=int, default=80)
    ap.add_argument("--classes", type=int, default=6)
    ap.add_argument("--files", type=int, default=2, help="training files (validation: one)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--id-key", default="id", help="`id` (2018) or `video_id` (2017)")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    os.makedirs(a.out, exist_ok=True)
    names = ["Car", "Games, Video", "Music", "Cooking", "Dance", "Football"]
    names += ["Class %d" % i for i in range(len(names), a.classes)]
    with open(os.path.join(a.out, "vocabulary.csv"), "w") as f:
        f.write("Index,TrainVideoCount,KnowledgeGraphId,Name,WikiUrl,Vertical1,Vertical2,Vertical3,WikiDescription\n")
        for i in range(a.classes):
            name = '"%s"' % names[i] if "," in names[i] else names[i]
            f.write('%d,%d,/m/0%d,%s,https://en.wikipedia.org/wiki/X%d,Arts,,,"A class, described."\n'
                    % (i, 1000 - i, i, name, i))
    expected = None
    seen = set()
    for split, n, files in [("train", a.train, a.files), ("validate", a.val, 1)]:
        folder = os.path.join(a.out, a.level, split)
        os.makedirs(folder, exist_ok=True)
        writers = [tfrecord.TFRecordWriter(os.path.join(folder, "%s%04d.tfrecord" % (split, k)))
                   for k in range(files)]
        for i in range(n):
            vid = video_id(rng)
            while vid in seen:
                vid = video_id(rng)
            seen.add(vid)
            labels, rgb, audio = video(rng, a.classes, int(rng.integers(5, 13)))
            context = {a.id_key: (vid.encode(), "byte"), "labels": (labels, "int")}
            w = writers[i % files]
            if a.level == "frame":
                w.write(context, {"rgb": ([f.tobytes() for f in rgb], "byte"),
                                  "audio": ([f.tobytes() for f in audio], "byte")})
                values = {"rgb0": dequantize(rgb[0]).tolist(), "audio0": dequantize(audio[0]).tolist()}
            else:
                mean_rgb = dequantize(rgb).mean(axis=0, dtype=np.float32)
                mean_audio = dequantize(audio).mean(axis=0, dtype=np.float32)
                context.update({"mean_rgb": (mean_rgb, "float"), "mean_audio": (mean_audio, "float")})
                w.write(context)
                values = {"mean_rgb": mean_rgb.tolist()}
            if expected is None:
                expected = dict(id=vid, labels=labels, frames=len(rgb), **values)
        for w in writers:
            w.close()
    with open(os.path.join(a.out, "expected.json"), "w") as f:
        json.dump(expected, f)


if __name__ == "__main__":
    main()
