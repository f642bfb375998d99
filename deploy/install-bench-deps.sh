#!/usr/bin/env bash
# install-bench-deps.sh - installs the Debian/Ubuntu packages the peer
# benchmarks compare shoal with, when they are missing. Used by `make
# bench-deps`, and so by `make bench-hnsw` and `make bench-flat`. Quick when
# everything is present: it only asks dpkg.
#
#   libhnswlib-dev  hnswlib's headers, for bench/hnswlib_bench.cpp (bench-hnsw)
#   python3-faiss   Faiss's exact index, for bench/faiss_flat.py (bench-flat);
#   python3-numpy   run by Debian's own /usr/bin/python3, not a python3 from
#                   PATH, which may be another interpreter without these;
#   python3-matplotlib  the plots of the results (make bench-hnsw-plot).
#
# Not part of `make deps`: building and testing shoal needs none of them.
exec bash "$(dirname "$0")/install-deps.sh" bench-deps libhnswlib-dev python3-faiss python3-numpy python3-matplotlib
