#!/usr/bin/python3
"""plot_hnsw.py - recall@10 against queries per second, one figure per data set,
from the results bench/run_hnsw.sh leaves (RESULTS/NAME.PROG.txt: shoal's
f32, f16 and sq8 graphs and hnswlib, medians over the rounds). Used by
`make bench-hnsw-plot`; run by Debian's /usr/bin/python3 (python3-matplotlib).

    plot_hnsw.py RESULTS OUTDIR      writes OUTDIR/hnsw-NAME.png per data set
"""
import glob
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

PROGS = [("hnswlib", "hnswlib", "k", "o"), ("shoal-f32", "shoal f32", "tab:blue", "s"),
         ("shoal-f16", "shoal f16", "tab:green", "^"), ("shoal-sq8", "shoal sq8", "tab:red", "D")]
LINE = re.compile(r"^ef=(\d+) recall@10=([0-9.]+) qps=([0-9.]+)")


def read(path):
    """(header line, [(ef, recall, qps)]) of one result file."""
    points, header, mem = [], "", ""
    with open(path) as f:
        for i, line in enumerate(f):
            if i == 0:
                header = line.strip()
            m = LINE.match(line)
            if m:
                points.append((int(m.group(1)), float(m.group(2)), float(m.group(3))))
            b = re.search(r"bytes_per_vector=([0-9.]+)", line)
            if b:
                mem = b.group(1)
    return header, points, mem


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    results, outdir = sys.argv[1], sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    names = sorted({os.path.basename(p).split(".")[0]
                    for p in glob.glob(os.path.join(results, "*.hnswlib.txt"))})
    if not names:
        sys.exit("plot_hnsw: no results in %s (run make bench-hnsw first)" % results)
    for name in names:
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        header = ""
        for prog, label, color, marker in PROGS:
            path = os.path.join(results, "%s.%s.txt" % (name, prog))
            if not os.path.exists(path):
                continue
            header, points, mem = read(path)
            if not points:
                continue
            label = "%s (%s B/vector)" % (label, mem) if mem else label
            ax.plot([p[1] for p in points], [p[2] for p in points], marker=marker, color=color,
                    label=label)
        ax.set_xlabel("recall@10")
        ax.set_ylabel("queries per second, one thread (log)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title("%s: %s" % (name, header.split(" M=")[0]), fontsize=9)
        ax.legend(fontsize=8)
        out = os.path.join(outdir, "hnsw-%s.png" % name)
        fig.tight_layout()
        fig.savefig(out, dpi=110)
        plt.close(fig)
        print("plot_hnsw: wrote %s" % out)


if __name__ == "__main__":
    main()
