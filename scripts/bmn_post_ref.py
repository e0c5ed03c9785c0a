"""Reference proposals for vidkit's BMN post-processing (lib/src/proposals.rs): PaddleVideo's
paddlevideo/metrics/bmn_metric.py run on BMN outputs saved as .npy (one video, batch index 0):
its own boundary_choose and soft_nms functions, and BMNMetric.update / video_process's candidate
loop and top-100 scaling restated around them (they are methods that read a dataset and write
CSV files).

    python bmn_post_ref.py BM.npy START.npy END.npy DURATION OUT.json
"""
import json
import sys
import warnings

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")
from paddlevideo.metrics.bmn_metric import boundary_choose, soft_nms  # noqa: E402

bm_path, start_path, end_path, duration, out = sys.argv[1:6]
pred_bm, pred_start, pred_end = np.load(bm_path)[0:1], np.load(start_path)[0], np.load(end_path)[0]
dscale, tscale = pred_bm.shape[2], pred_bm.shape[3]
snippet_xmins = [1.0 / tscale * i for i in range(tscale)]
snippet_xmaxs = [1.0 / tscale * i for i in range(1, tscale + 1)]
pred_bm = pred_bm[0, 0, :, :] * pred_bm[0, 1, :, :]
start_mask = boundary_choose(pred_start)
start_mask[0] = 1.
end_mask = boundary_choose(pred_end)
end_mask[-1] = 1.
rows = []
for idx in range(dscale):
    for jdx in range(tscale):
        s, e = jdx, jdx + idx
        if e < tscale and start_mask[s] == 1 and end_mask[e] == 1:
            rows.append([snippet_xmins[s], snippet_xmaxs[e], pred_start[s] * pred_end[e] * pred_bm[idx, jdx]])
df = pd.DataFrame(np.stack(rows), columns=["xmin", "xmax", "score"])
candidates = df.values.tolist()
if len(df) > 1:
    df = soft_nms(df, 0.4, 0.55, 0.9)
duration = float(duration)
proposals = [{"score": float(df.score.values[i]),
              "segment": [max(0, df.xmin.values[i]) * duration, min(1, df.xmax.values[i]) * duration]}
             for i in range(min(100, len(df)))]
json.dump({"candidates": candidates, "proposals": proposals}, open(out, "w"))
