"""Reference numbers for `vfeat --rescale` (lib/src/featstore/rescale.rs): MMAction2's
tools/data/activitynet/activitynet_feature_postprocessing.py, `pool_feature`, restated here as
it runs there (scipy's linear interp1d over the row number, 3 samples per step, mean or max),
because that script imports mmengine and its config module at the top.

    python rescale_ref.py IN.npy OUT.npy STEPS BINS mean|max
"""
import sys

import numpy as np
import scipy.interpolate


def pool_feature(data, num_proposals, num_sample_bins, pool_type):
    if len(data) == 1:
        return np.concatenate([data] * num_proposals)
    f = scipy.interpolate.interp1d(list(range(len(data))), data, axis=0)
    eps = 1e-4
    start, end = eps, len(data) - 1 - eps
    anchor_size = (end - start) / num_proposals
    ptr = start
    feature = []
    for _ in range(num_proposals):
        x_new = [ptr + i / num_sample_bins * anchor_size for i in range(num_sample_bins)]
        y_new = f(x_new)
        y_new = np.mean(y_new, axis=0) if pool_type == "mean" else np.max(y_new, axis=0)
        feature.append(y_new)
        ptr += anchor_size
    return np.stack(feature)


if __name__ == "__main__":
    src, dst, steps, bins, pool = sys.argv[1:6]
    np.save(dst, pool_feature(np.load(src), int(steps), int(bins), pool).astype(np.float64))
