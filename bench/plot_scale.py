#!/usr/bin/python3
"""plot_scale.py - the cluster at 1, 2, 4, 8 shards, from the logs
bench/run_scale.sh leaves (RESULTS/shards-S.log, `shoal-bench cluster`'s sweep
lines): shards touched per query against nprobe, and recall@10 against batch
queries per second (each shard count's best setting at each recall). Used by
`make bench-scale-plot`; run by Debian's /usr/bin/python3 (python3-matplotlib).

    plot_scale.py RESULTS OUTDIR     writes OUTDIR/scale-fanout.png, scale-recall-qps.png
"""
import glob
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

SWEEP = re.compile(r"^sweep cluster nprobe=(\d+) ef=(\d+) recall@\d+=([0-9.]+) qps=([0-9.]+)"
                   r" shards_per_query=([0-9.]+)")
INPROC = re.compile(r"^sweep inprocess ef=(\d+) recall@\d+=([0-9.]+) qps=([0-9.]+)")


def read(path):
    """Sweep points [(nprobe, ef, recall, qps, shards)] and in-process [(recall, qps)]."""
    cluster, inproc = [], []
    with open(path) as f:
        for line in f:
            m = SWEEP.match(line)
            if m:
                cluster.append((int(m.group(1)), int(m.group(2)), float(m.group(3)),
                                float(m.group(4)), float(m.group(5))))
            m = INPROC.match(line)
            if m:
                inproc.append((float(m.group(2)), float(m.group(3))))
    return cluster, inproc


def front(points):
    """The best qps at or above each recall: [(recall, qps)] ascending by recall."""
    pts = sorted(points, key=lambda p: (-p[0], -p[1]))
    out, best = [], 0.0
    for r, q in pts:
        if q > best:
            out.append((r, q))
            best = q
    return sorted(out)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    results, outdir = sys.argv[1], sys.argv[2]
    logs = sorted(glob.glob(os.path.join(results, "shards-*.log")),
                  key=lambda p: int(re.search(r"shards-(\d+)", p).group(1)))
    if not logs:
        sys.exit("plot_scale: no logs in %s (run make bench-scale first)" % results)
    os.makedirs(outdir, exist_ok=True)
    fig1, ax1 = plt.subplots(figsize=(6.0, 4.2))
    fig2, ax2 = plt.subplots(figsize=(6.4, 4.4))
    inproc_drawn = False
    for path in logs:
        s = int(re.search(r"shards-(\d+)", path).group(1))
        cluster, inproc = read(path)
        if not cluster:
            continue
        fan = {}
        for nprobe, _, _, _, shards in cluster:
            fan[nprobe] = shards
        xs = sorted(fan)
        ax1.plot(xs, [fan[x] for x in xs], marker="o", label="%d shard%s" % (s, "s" * (s > 1)))
        f = front([(p[2], p[3]) for p in cluster])
        ax2.plot([p[0] for p in f], [p[1] for p in f], marker="o",
                 label="cluster, %d shard%s" % (s, "s" * (s > 1)))
        if inproc and not inproc_drawn:
            f = front(inproc)
            ax2.plot([p[0] for p in f], [p[1] for p in f], "k--", marker="x",
                     label="one in-process index")
            inproc_drawn = True
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("nprobe (IVF lists probed)")
    ax1.set_ylabel("shards touched per query")
    ax1.grid(True, alpha=0.3)
    ax1.legend(fontsize=8)
    ax1.set_title("fan-out against nprobe", fontsize=9)
    ax2.set_xlabel("recall@10")
    ax2.set_ylabel("batch queries per second (log)")
    ax2.set_yscale("log")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8)
    ax2.set_title("best setting at each recall, by shard count", fontsize=9)
    for fig, name in ((fig1, "scale-fanout.png"), (fig2, "scale-recall-qps.png")):
        fig.tight_layout()
        out = os.path.join(outdir, name)
        fig.savefig(out, dpi=110)
        print("plot_scale: wrote %s" % out)


if __name__ == "__main__":
    main()
