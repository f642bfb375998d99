# shoal - one entry point for building, testing, benchmarking and the demo.
#
#   make               build everything (CUDA if found; NO_CUDA=1 forces CPU-only)
#   make deps          install missing Debian packages (needs root)
#   make test          deps + build + every test suite (Criterion + process tests)
#   make test-asan     the same tests built with AddressSanitizer + UBSan
#   make test-chaos    kill -9 / restart of random processes while writing, then
#                      every acknowledged write checked (CHAOS_ARGS=... for options)
#   make demo          the main job end to end (see README.md)
#   make bench-distances  distance kernels, scalar vs SIMD
#   make bench-hnsw    shoal's HNSW against hnswlib (BENCH_HNSW_N=... sets the
#                      generated set's size; make bench-hnsw-quick: 20,000);
#                      make bench-hnsw-plot draws its recall-QPS plots
#   make bench-flat    shoal's exact CPU search against Faiss's IndexFlatL2
#   make bench-shard   a shoal-shard through its socket: inserts/s, socket cost,
#                      restart vs rebuild (BENCH_SHARD_N=... sets the set's size)
#   make bench-cluster coordinator + 4 shards against one in-process HNSW at the
#                      same recall (BENCH_N=... sets the set's size, default 200,000)
#   make bench-scale   the cluster at 1, 2, 4, 8 shards on one set (BENCH_SCALE_N,
#                      default 1,000,000): shards per query by nprobe, recall
#                      against qps; make bench-scale-plot draws them
#   make bench-leak    RSS growth per process under 2 clients' mixed load
#                      (BENCH_LEAK_SECONDS=... sets the length, default 600)
#   make test-cluster-hosts  replication (R=2) on 4 shard hosts + a coordinator
#                      host in network namespaces: kill -9, partitions, a wiped
#                      shard, W=2 refusals, 30+ random faults; growth: 3 -> 4
#                      shards, drain + remove, coordinator kill -9 mid-move
#                      (needs root)
#   make bench-replication  R=1 against R=2 on those hosts: insert, batch and
#                      single-query throughput, wiped-shard rebuild rate (root)
#   make bench-rebalance  a 3 -> 4 shard rebalance on those hosts: copy rate,
#                      single-query p50/p99 before, during and after (root)
#   make bench-deps    install the peers the benchmarks compare with (needs root)
#   make gpu-check     GPU engine against the CPU engine and torch (on a GPU host;
#                      builds with gcc, nvcc and the CUDA libraries alone)
#   make gpu-lib       gpu/ and the common core only (no ZeroMQ/RocksDB needed)
#   make gpu-validate  the GPU engine's first-contact check on a GPU host (<8 min;
#                      skipped=no_device elsewhere; gpu/validate.sh)
#   make info          what the build detected (CUDA, BLAS, datasets)
#   make deb           the Debian package build/deb/shoal_VERSION_amd64.deb (CPU and,
#                      when found, CUDA builds; lintian-checked; deploy/deb)
#   make deploy-deps   install ansible, ansible-lint, debootstrap, nspawn, lintian
#   make test-deploy   the package and deploy/ansible on 4 booted Debian hosts
#                      (deploy/test-deploy.sh; needs root; docs/deploy.md)
#
# Objects go to $(BUILD)/, binaries to $(BIN)/. Sanitizer builds use their own
# BUILD and BIN so the two never mix.

SHELL := /bin/bash
, := ,
.DEFAULT_GOAL := all
.SUFFIXES:
.DELETE_ON_ERROR:

BUILD ?= build
BIN ?= bin
DATASETS ?= $(CURDIR)/../shared/datasets
SAN ?=

CC ?= cc
CFLAGS_WARN := -Wall -Wextra -Werror
CFLAGS_BASE := -std=c11 -O2 -g $(CFLAGS_WARN) -D_POSIX_C_SOURCE=200809L -pthread -I.
DEPFLAGS = -MMD -MP -MF $(@:.o=.d)
LDFLAGS_BASE := -pthread -Wl,--as-needed
LDLIBS_BASE := -lm

ifneq ($(SAN),)
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
CFLAGS_BASE += $(SANFLAGS)
LDFLAGS_BASE += $(SANFLAGS)
endif

# Extra flags from the command line (make CFLAGS=...) come last.
ALL_CFLAGS = $(CFLAGS_BASE) $(CFLAGS)
# Links a program from the objects and archives among its prerequisites.
LINK = $(CC) $(LDFLAGS_BASE) $(LDFLAGS) $(filter %.o %.a,$^) -o $@
# The networked programs and tests: ZeroMQ, msgpack, RocksDB, CUDA, BLAS.
LINK_NET = $(LINK) $(NET_LIBS) $(GPU_LDLIBS) $(BLAS_LIBS) $(LDLIBS_BASE)

# --------------------------------------------------------------------------
# CUDA detection: nvcc on PATH, else $(CUDA_HOME)/bin/nvcc. NO_CUDA=1 skips.
# The runtime API only (-lcudart): never -lcuda, which can resolve to the
# driver stub at link time and then fail at start-up.
# --------------------------------------------------------------------------
CUDA_HOME ?= /usr/local/cuda
NO_CUDA ?=
ifeq ($(NO_CUDA),)
NVCC := $(or $(shell command -v nvcc 2>/dev/null),$(wildcard $(CUDA_HOME)/bin/nvcc))
endif

# Where the toolkit lives: nvcc says so itself (its --dryrun prints TOP=),
# because the nvcc on PATH may be a wrapper script in /usr/local/bin. The
# libraries are then looked for in that tree (and the system's multiarch
# directory); a toolkit without them builds CPU-only and says why.
ifneq ($(NVCC),)
CUDA_ROOT := $(realpath $(or $(shell $(NVCC) --dryrun -x cu -c /dev/null -o /dev/null 2>&1 | \
                 sed -n 's/^\#\$$ TOP=//p' | head -n 1),$(dir $(NVCC))/..))
CUDA_LIBCANDS := $(CUDA_ROOT)/lib64 $(CUDA_ROOT)/lib $(CUDA_ROOT)/targets/x86_64-linux/lib \
                 /usr/lib/x86_64-linux-gnu
cuda_find = $(firstword $(wildcard $(addsuffix /lib$(1).so,$(CUDA_LIBCANDS))))
CUDA_LIBS_FOUND := $(foreach l,cudart cublas nccl,$(call cuda_find,$(l)))
ifneq ($(words $(CUDA_LIBS_FOUND)),3)
$(warning nvcc found ($(NVCC)) but not all of libcudart, libcublas, libnccl under $(CUDA_LIBCANDS): building CPU-only)
CUDA_MISSING := $(NVCC): libraries not found
NVCC :=
endif
endif

ifneq ($(NVCC),)
HAVE_CUDA := 1
CUDA_LIBDIRS := $(sort $(patsubst %/,%,$(dir $(CUDA_LIBS_FOUND))))
CUDA_INCDIR := $(firstword $(wildcard $(CUDA_ROOT)/include $(CUDA_ROOT)/targets/x86_64-linux/include))
NVCC_ARCH := -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
             -gencode arch=compute_90,code=compute_90
NVCCFLAGS := -O2 -std=c++17 $(NVCC_ARCH) -I. -Xcompiler -Wall,-Wextra,-Werror \
             -DSHOAL_HAVE_CUDA=1
GPU_DEFS := -DSHOAL_HAVE_CUDA=1 $(if $(CUDA_INCDIR),-I$(CUDA_INCDIR))
GPU_LDLIBS := $(foreach d,$(CUDA_LIBDIRS),-L$(d) -Wl$(,)-rpath$(,)$(d)) \
              -lcudart -lcublas -lnccl -lstdc++
BUILD_KIND := cuda ($(NVCC))
else
HAVE_CUDA :=
GPU_DEFS :=
GPU_LDLIBS :=
BUILD_KIND := cpu-only$(if $(CUDA_MISSING), ($(CUDA_MISSING)))
endif

# --------------------------------------------------------------------------
# OpenBLAS for the CPU exact engine (common/flat.c). A GPU host may have only
# the CUDA toolkit: without OpenBLAS (or with NO_BLAS=1) the engine's batch
# path uses the SIMD distance kernels instead of GEMM.
# --------------------------------------------------------------------------
NO_BLAS ?=
ifeq ($(NO_BLAS),)
HAVE_BLAS := $(shell pkg-config --exists openblas 2>/dev/null && echo 1)
endif
ifneq ($(HAVE_BLAS),)
BLAS_CFLAGS := $(shell pkg-config --cflags openblas)
BLAS_LIBS := $(shell pkg-config --libs openblas)
BUILD_KIND += + openblas
else
BLAS_CFLAGS := -DSHOAL_NO_BLAS=1
BLAS_LIBS :=
BUILD_KIND += without BLAS
endif

# --------------------------------------------------------------------------
# Libraries found through pkg-config. Recursive (=) so that pkg-config only
# runs for targets that link them: gpu/ and common/ core build without them.
# --------------------------------------------------------------------------
NET_PKGS := libczmq libzmq msgpack rocksdb libmicrohttpd
NET_CFLAGS = $(shell pkg-config --cflags $(NET_PKGS))
NET_LIBS = $(shell pkg-config --libs $(NET_PKGS))
CRITERION_CFLAGS = $(shell pkg-config --cflags criterion)
CRITERION_LIBS = $(shell pkg-config --libs criterion)

# --------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------
# Two floors. common/ is the pure floor (distances, top-k, vector files, data
# generator, RNG, ground truth, flat engine, quantizers, metrics text): no
# ZeroMQ, RocksDB or msgpack, so gpu/ and the algorithm modules build on it
# alone. net/ is the networked glue above it: the wire codec (msgpack) and its
# socket I/O, the RocksDB wrapper, the metrics endpoint (libmicrohttpd), the
# servers' process skeleton and option parsing.
NET_SRCS := $(wildcard net/*.c)
NET_OBJS := $(NET_SRCS:%.c=$(BUILD)/%.o)
COMMON_SRCS := $(wildcard common/*.c)
COMMON_OBJS := $(COMMON_SRCS:%.c=$(BUILD)/%.o)

# gpu_check.c is a program (make gpu-check), not part of the library.
GPU_C_SRCS := $(filter-out gpu/gpu_check.c,$(wildcard gpu/*.c))
GPU_CU_SRCS := $(if $(HAVE_CUDA),$(wildcard gpu/*.cu))
GPU_OBJS := $(GPU_C_SRCS:%.c=$(BUILD)/%.o) $(GPU_CU_SRCS:%.cu=$(BUILD)/%.cu.o)

# shard/'s index (HNSW): algorithm code, no ZeroMQ or RocksDB.
INDEX_SRCS := $(wildcard shard/hnsw*.c)
INDEX_OBJS := $(INDEX_SRCS:%.c=$(BUILD)/%.o)

# coordinator/'s algorithms (k-means, placement, fan-out plan and merge): no
# ZeroMQ or RocksDB. Named one by one so that the server's files stay out.
COORD_ALGO_SRCS := $(wildcard coordinator/kmeans.c coordinator/placement.c coordinator/placement_rebalance.c coordinator/fanout.c)
COORD_ALGO_OBJS := $(COORD_ALGO_SRCS:%.c=$(BUILD)/%.o)

# The coordinator server: catalog (RocksDB) and sockets (main.c holds main()).
COORDSRV_SRCS := $(filter-out $(COORD_ALGO_SRCS) coordinator/main.c,$(wildcard coordinator/*.c))
COORDSRV_OBJS := $(COORDSRV_SRCS:%.c=$(BUILD)/%.o)
COORD_MAIN := $(if $(wildcard coordinator/main.c),$(BUILD)/coordinator/main.o)

# The shard server: storage layer and sockets (main.c holds only main()).
SHARD_SRCS := $(filter-out $(INDEX_SRCS) shard/main.c,$(wildcard shard/*.c))
SHARD_OBJS := $(SHARD_SRCS:%.c=$(BUILD)/%.o)
SHARD_MAIN := $(if $(wildcard shard/main.c),$(BUILD)/shard/main.o)

# The client library (client/*.c except the CLI's main).
CLIENT_SRCS := $(filter-out client/main.c,$(wildcard client/*.c))
CLIENT_OBJS := $(CLIENT_SRCS:%.c=$(BUILD)/%.o)
CLI_MAIN := $(if $(wildcard client/main.c),$(BUILD)/client/main.o)

BENCH_SRCS := $(wildcard bench/shoal_bench*.c)
BENCH_OBJS := $(BENCH_SRCS:%.c=$(BUILD)/%.o)

TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BINS := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
# make test runs every suite but the many-host ones (replication, growth), which
# take minutes and need root: make test-cluster-hosts runs them (built by `all`).
HOSTS_TEST_BINS := $(BUILD)/tests/test_replication $(BUILD)/tests/test_growth
# TESTS="gpu knn" runs only those suites (tests/test_gpu.c, tests/test_knn.c),
# and not the Python client's tests.
TESTS ?=
TEST_RUN_BINS := $(if $(TESTS),$(TESTS:%=$(BUILD)/tests/test_%),\
                   $(filter-out $(HOSTS_TEST_BINS),$(TEST_BINS)))

LIB_COMMON := $(BUILD)/libshoal_common.a
LIB_GPU := $(BUILD)/libshoal_gpu.a
LIB_INDEX := $(BUILD)/libshoal_index.a
LIB_COORD := $(BUILD)/libshoal_coord.a
LIB_COORDSRV := $(BUILD)/libshoal_coordsrv.a
LIB_NET := $(BUILD)/libshoal_net.a
LIB_SHARD := $(BUILD)/libshoal_shard.a
LIB_CLIENT := $(BUILD)/libshoal_client.a

PROGRAMS := $(BIN)/shoal-bench $(if $(SHARD_MAIN),$(BIN)/shoal-shard) \
            $(if $(COORD_MAIN),$(BIN)/shoal-coordinator) $(if $(CLI_MAIN),$(BIN)/shoal)

# The SIMD kernels get their instruction sets per file; everything else stays
# baseline x86-64 so one binary runs on any CPU and picks kernels at run time.
$(BUILD)/common/distance_avx2.o: CFLAGS_BASE += -mavx2 -mfma
$(BUILD)/common/distance_avx512.o: CFLAGS_BASE += -mavx512f -mavx2 -mfma
$(BUILD)/common/quant_avx2.o: CFLAGS_BASE += -mavx2 -mfma
$(BUILD)/common/quant_avx512.o: CFLAGS_BASE += -mavx512f -mavx2 -mfma

$(GPU_OBJS): CFLAGS_BASE += $(GPU_DEFS)
$(BUILD)/common/flat.o: CFLAGS_BASE += $(BLAS_CFLAGS)

# Every object depends on a stamp holding the flags it was built with, so a
# change of configuration (NO_CUDA=1, CFLAGS=...) rebuilds instead of mixing
# objects of two configurations. The stamp is rewritten only when it changes.
FLAGS_STAMP := $(BUILD)/.flags
FLAGS_NOW := $(CC) $(ALL_CFLAGS) | $(NVCC) $(NVCCFLAGS) | $(GPU_DEFS) | $(GPU_LDLIBS) | $(BLAS_CFLAGS)
$(shell mkdir -p $(BUILD) && { [ "$$(cat $(FLAGS_STAMP) 2>/dev/null)" = '$(FLAGS_NOW)' ] || \
    printf '%s\n' '$(FLAGS_NOW)' > $(FLAGS_STAMP); })

# --------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------
.PHONY: all deps test test-run test-asan test-chaos demo demo-run bench-distances bench-deps \
        bench-hnsw bench-hnsw-quick bench-hnsw-plot bench-scale bench-scale-plot bench-flat \
        bench-shard bench-cluster bench-leak clean info \
        gpu-lib gpu-check gpu-validate deb deploy-deps test-deploy

all: $(PROGRAMS) $(TEST_BINS)
	@echo "shoal: built ($(BUILD_KIND)$(if $(SAN), sanitizers))"

info:
	@echo "build:     $(BUILD_KIND)"
	@echo "nvcc:      $(or $(NVCC),none)"
	@echo "cuda libs: $(or $(CUDA_LIBDIRS),none)"
	@echo "blas:      $(or $(BLAS_LIBS),none (SIMD kernels for batches))"
	@echo "datasets:  $(DATASETS)"

# gpu/ plus the common core alone: what a GPU host without ZeroMQ/RocksDB builds.
gpu-lib: $(LIB_GPU) $(LIB_COMMON)

# The GPU check: GPU engine against the CPU engine, and timings (gpu/gpu_check.c).
# Needs only the C compiler, the CUDA libraries and (optionally) OpenBLAS: no
# pkg-config lookups of ZeroMQ, RocksDB or Criterion. Flags for the program:
# make gpu-check GPU_CHECK_ARGS="--max-n 1000000".
GPU_CHECK := $(BIN)/shoal-gpu-check
GPU_CHECK_ARGS ?=
$(BUILD)/gpu/gpu_check.o: CFLAGS_BASE += $(GPU_DEFS)

$(GPU_CHECK): $(BUILD)/gpu/gpu_check.o $(LIB_GPU) $(LIB_COMMON) $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(LINK) $(GPU_LDLIBS) $(BLAS_LIBS) $(LDLIBS_BASE)

gpu-check: $(GPU_CHECK)
	SHOAL_LOG_LEVEL=$${SHOAL_LOG_LEVEL:-warn} $(GPU_CHECK) $(GPU_CHECK_ARGS)

# The GPU engine's first-contact check on a GPU host (gpu/validate.sh): driver,
# a CUDA build of gpu/ alone, the GPU suites, compute-sanitizer, gpu-check's
# quick table, the 1M targets and the k-NN graph; RESULT gpu-validate lines.
# Without a GPU it says skipped=no_device and succeeds.
gpu-validate:
	@bash gpu/validate.sh

# The GPU suites link gpu/ and common/ only, so a GPU host with Criterion but
# without ZeroMQ or RocksDB builds them (gpu-validate).
$(BUILD)/tests/test_gpu $(BUILD)/tests/test_knn: $(BUILD)/tests/%: $(BUILD)/tests/%.o \
                                                $(LIB_GPU) $(LIB_COMMON)
	$(LINK) $(GPU_LDLIBS) $(BLAS_LIBS) $(LDLIBS_BASE) $(CRITERION_LIBS)

$(BUILD)/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(DEPFLAGS) -c $< -o $@

$(BUILD)/%.cu.o: %.cu $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -MF $(@:.o=.d) -c $< -o $@

# One static library per layer; each is rebuilt from its objects.
$(LIB_COMMON): $(COMMON_OBJS)
$(LIB_GPU): $(GPU_OBJS)
$(LIB_INDEX): $(INDEX_OBJS)
$(LIB_COORD): $(COORD_ALGO_OBJS)
$(LIB_COORDSRV): $(COORDSRV_OBJS)
$(LIB_NET): $(NET_OBJS)
$(LIB_SHARD): $(SHARD_OBJS)
$(LIB_CLIENT): $(CLIENT_OBJS)
$(BUILD)/libshoal_%.a:
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(NET_OBJS) $(SHARD_OBJS) $(SHARD_MAIN) $(BENCH_OBJS) $(CLIENT_OBJS) $(CLI_MAIN) \
    $(COORDSRV_OBJS) $(COORD_MAIN): CFLAGS_BASE += $(NET_CFLAGS)

$(BIN)/shoal-shard: $(SHARD_MAIN) $(LIB_SHARD) $(LIB_INDEX) $(LIB_NET) $(LIB_GPU) $(LIB_COMMON) \
                    $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(LINK_NET)

$(BIN)/shoal-coordinator: $(COORD_MAIN) $(LIB_COORDSRV) $(LIB_COORD) $(LIB_NET) $(LIB_GPU) \
                          $(LIB_COMMON) $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(LINK_NET)

$(BIN)/shoal: $(CLI_MAIN) $(LIB_CLIENT) $(LIB_NET) $(LIB_GPU) $(LIB_COMMON) $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(LINK_NET)

$(BIN)/shoal-bench: $(BENCH_OBJS) $(LIB_CLIENT) $(LIB_SHARD) $(LIB_COORD) $(LIB_INDEX) $(LIB_NET) \
                    $(LIB_GPU) $(LIB_COMMON) $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(LINK_NET)

$(BUILD)/tests/%.o: tests/%.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(CRITERION_CFLAGS) $(NET_CFLAGS) $(DEPFLAGS) -c $< -o $@

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(LIB_CLIENT) $(LIB_COORDSRV) $(LIB_SHARD) $(LIB_COORD) \
                  $(LIB_INDEX) $(LIB_NET) \
                  $(LIB_GPU) $(LIB_COMMON)
	$(LINK_NET) $(CRITERION_LIBS)

deps:
	@bash deploy/install-deps.sh

# Runs every suite even when one fails, then fails if any did. Process tests
# find the binaries through SHOAL_BIN and the shared data through SHOAL_DATASETS.
TEST_ENV = SHOAL_BIN=$(abspath $(BIN)) SHOAL_DATASETS=$(DATASETS) SHOAL_LOG_LEVEL=warn \
           SHOAL_TMP=$(abspath $(BUILD))/tmp
test-run: all
	@mkdir -p $(BUILD)/tmp $(BUILD)/logs
	@failed=(); \
	for t in $(TEST_RUN_BINS); do \
	    echo "=== $$t"; \
	    log=$(BUILD)/logs/$$(basename $$t).log; \
	    $(TEST_ENV) $$t --jobs=2 2>&1 | tee $$log; rc=$${PIPESTATUS[0]}; \
	    if [ $$rc -ne 0 ]; then failed+=("$$t"); \
	    elif grep -qE 'LeakSanitizer|AddressSanitizer|UndefinedBehaviorSanitizer|runtime error:' $$log; then \
	        echo "shoal: sanitizer report in $$t (see $$log)"; failed+=("$$t"); \
	    fi; \
	done; \
	$(if $(SAN)$(TESTS),,echo "=== test-python"; \
	    $(MAKE) --no-print-directory test-python || failed+=("test-python");) \
	if [ $${#failed[@]} -ne 0 ]; then \
	    echo "shoal: FAILED suites: $${failed[*]}"; exit 1; \
	fi; \
	echo "shoal: all $(words $(TEST_RUN_BINS)) suites passed$(if $(SAN)$(TESTS),, and the Python client's tests) ($(BUILD_KIND)$(if $(SAN), sanitizers))"

# The Python client's tests (client/python/tests) with Debian's python3 and its
# python3-zmq/-msgpack/-numpy/-pytest, against the programs in $(BIN); they
# start their own cluster on ports 7980-7985 and print pytest's summary line.
# test-run runs them after the C suites, except in sanitizer builds (test-asan).
PYTHON ?= /usr/bin/python3
.PHONY: test-python
test-python: $(BIN)/shoal-shard $(BIN)/shoal-coordinator
	@mkdir -p $(BUILD)/tmp
	@cd client/python && $(TEST_ENV) $(PYTHON) -m pytest -p no:cacheprovider -q -rs \
	    --basetemp=$(abspath $(BUILD))/tmp/pytest tests

test: deps
	@$(MAKE) --no-print-directory test-run

# CUDA's runtime maps memory where ASan's shadow gap sits; let it.
test-asan: deps
	@ASAN_OPTIONS=protect_shadow_gap=0:detect_leaks=1:abort_on_error=1 \
	 UBSAN_OPTIONS=print_stacktrace=1 \
	 $(MAKE) --no-print-directory SAN=1 BUILD=build/asan BIN=build/asan/bin test-run

bench-distances: $(BIN)/shoal-bench
	@for d in 32 128 768; do $(BIN)/shoal-bench distances --dim $$d; done

# shoal's HNSW against hnswlib (bench/run_hnsw.sh). Both programs are built
# with the same optimisation flags, -O3 -march=native, in their own BUILD, whose
# flags stamp keeps that configuration apart from the default one. CPU only:
# the HNSW benchmark needs no CUDA, and NO_CUDA=1 saves the nvcc time.
NATIVE_BUILD := build/native
NATIVE_CFLAGS := -O3 -march=native
CXXFLAGS_BASE := -std=c++17 -O2 -g $(CFLAGS_WARN) -pthread -I.
BENCH_HNSW_N ?=

# hnswlib is header-only (Debian: libhnswlib-dev); this links shoal's common
# core so that both programs read files and compute recall with the same code.
$(BIN)/hnswlib-bench: bench/hnswlib_bench.cpp $(LIB_COMMON) $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	@[ -f /usr/include/hnswlib/hnswlib.h ] || { echo "hnswlib-bench: needs hnswlib:" \
	    "apt-get install --no-install-recommends libhnswlib-dev" >&2; exit 1; }
	$(CXX) $(CXXFLAGS_BASE) $(CFLAGS) $(LDFLAGS_BASE) $(LDFLAGS) $< $(LIB_COMMON) -o $@ \
	    $(BLAS_LIBS) $(LDLIBS_BASE)

# The peers: hnswlib's headers, Debian's python3-faiss and python3-numpy.
bench-deps:
	@bash deploy/install-bench-deps.sh

bench-hnsw: bench-deps
	@$(MAKE) --no-print-directory NO_CUDA=1 BUILD=$(NATIVE_BUILD) BIN=$(NATIVE_BUILD)/bin \
	    CFLAGS="$(NATIVE_CFLAGS)" $(NATIVE_BUILD)/bin/shoal-bench $(NATIVE_BUILD)/bin/hnswlib-bench
	@BENCH_HNSW_N=$(BENCH_HNSW_N) SHOAL_DATASETS=$(DATASETS) bash bench/run_hnsw.sh $(NATIVE_BUILD)/bin

bench-hnsw-quick:
	@$(MAKE) --no-print-directory bench-hnsw BENCH_HNSW_N=20000

# The recall-QPS plots of the last bench-hnsw run (build/bench-hnsw) into
# docs/img/hnsw-NAME.png, drawn by Debian's /usr/bin/python3 (matplotlib).
bench-hnsw-plot: bench-deps
	@/usr/bin/python3 bench/plot_hnsw.py build/bench-hnsw docs/img

# shoal's exact search against Faiss's (bench/run_flat.sh), run by Debian's
# /usr/bin/python3. shoal runs from the native build, as in bench-hnsw, and once
# from the default -O2 build so that both are visible; Debian's Faiss is a
# generic build, which the output says.
bench-flat: bench-deps
	@$(MAKE) --no-print-directory NO_CUDA=1 BUILD=$(NATIVE_BUILD) BIN=$(NATIVE_BUILD)/bin \
	    CFLAGS="$(NATIVE_CFLAGS)" $(NATIVE_BUILD)/bin/shoal-bench
	@$(MAKE) --no-print-directory $(BIN)/shoal-bench
	@SHOAL_DATASETS=$(DATASETS) bash bench/run_flat.sh $(NATIVE_BUILD)/bin $(BIN)

# A shoal-shard process driven through its socket (bench/shoal_bench_shard.c):
# insert rate, socket overhead against in-process HNSW, restart from the
# checkpoint against a rebuild. Data: `shoal-bench gen` into
# build/bench-data/gen-N-q1000-k10 (the same set bench-hnsw uses), made once and reused.
# N is $(BENCH_SHARD_N), else 1,000,000, or 200,000 on fewer than 4 cores (1M
# would take well over 15 minutes there: two HNSW builds of 1M on 2 cores).
BENCH_SHARD_N ?=
bench-shard: $(BIN)/shoal-bench $(BIN)/shoal-shard
	@n=$(BENCH_SHARD_N); \
	if [ -z "$$n" ]; then if [ "$$(nproc)" -ge 4 ]; then n=1000000; else n=200000; fi; fi; \
	gen=build/bench-data/gen-$$n-q1000-k10; \
	if [ ! -f "$$gen/groundtruth.ivecs" ]; then \
	    echo "== generating $$gen"; \
	    $(BIN)/shoal-bench gen --n $$n --dim 128 --queries 1000 --k 10 --seed 1 \
	        --out "$$gen" || exit 1; \
	else echo "bench-shard: reusing $$gen"; fi; \
	mkdir -p $(BUILD)/tmp; \
	SHOAL_TMP=$(abspath $(BUILD))/tmp SHOAL_LOG_LEVEL=$${SHOAL_LOG_LEVEL:-warn} \
	    $(BIN)/shoal-bench shard --base "$$gen/base.fvecs" --queries "$$gen/query.fvecs" \
	    --gt "$$gen/groundtruth.ivecs" --shard-bin $(BIN)/shoal-shard

# One coordinator + 4 shards on loopback (bench/shoal_bench_cluster.c) against
# one in-process HNSW of the same data, same total threads, same recall@10
# (>= 0.95): batch-of-1000 and single-query throughput, p50/p99, shards per
# query. Data: `shoal-bench gen` into build/bench-data/gen-N-q1000-k10, made
# once and reused; N is $(BENCH_N), else 200,000 (1,000,000 with BENCH_N=1000000).
BENCH_N ?= 200000
BENCH_CLUSTER_ARGS ?=
bench-cluster: $(BIN)/shoal-bench $(BIN)/shoal-shard $(BIN)/shoal-coordinator
	@gen=build/bench-data/gen-$(BENCH_N)-q1000-k10; \
	if [ ! -f "$$gen/groundtruth.ivecs" ]; then \
	    echo "== generating $$gen"; \
	    $(BIN)/shoal-bench gen --n $(BENCH_N) --dim 128 --queries 1000 --k 10 --seed 1 \
	        --out "$$gen" || exit 1; \
	else echo "bench-cluster: reusing $$gen"; fi; \
	mkdir -p $(BUILD)/tmp; \
	SHOAL_TMP=$(abspath $(BUILD))/tmp SHOAL_LOG_LEVEL=$${SHOAL_LOG_LEVEL:-warn} \
	    $(BIN)/shoal-bench cluster --base "$$gen/base.fvecs" --queries "$$gen/query.fvecs" \
	    --gt "$$gen/groundtruth.ivecs" --shards 4 --shard-bin $(BIN)/shoal-shard \
	    --coordinator-bin $(BIN)/shoal-coordinator $(BENCH_CLUSTER_ARGS)

# A coordinator + 3 shards on fixed ports 7900-7903 (bench/shoal_bench_chaos.c):
# batches of known ids inserted, upserted and deleted while a random process is
# kill -9'd and restarted, 50 times; then a clean restart, the coordinator's
# re-drives, and every acknowledged write checked (RESULT chaos ...; non-zero
# exit on any violation). Scratch data and logs go to $(BUILD)/tmp and are kept
# after a failure. CHAOS_ARGS="--seed N --cycles N --seconds S" passes options.
CHAOS_ARGS ?=
test-chaos: $(BIN)/shoal-bench $(BIN)/shoal-shard $(BIN)/shoal-coordinator
	@mkdir -p $(BUILD)/tmp
	@SHOAL_TMP=$(abspath $(BUILD))/tmp SHOAL_LOG_LEVEL=$${SHOAL_LOG_LEVEL:-warn} \
	    $(BIN)/shoal-bench chaos --shard-bin $(BIN)/shoal-shard \
	    --coordinator-bin $(BIN)/shoal-coordinator $(CHAOS_ARGS)

# One client's single queries while another's 100,000-query batch is routed on
# the loop (as before the routing thread) and on the routing thread
# (bench/run_route.sh; RESULT route ...). Loopback ports 7960-7962.
.PHONY: bench-route
# The cluster at 1, 2, 4 and 8 shard processes on one generated set
# (bench/run_scale.sh; BENCH_SCALE_N, default 1,000,000; BENCH_SCALE_SHARDS,
# BENCH_SCALE_NLIST, BENCH_SCALE_INTRINSIC): shards per query by nprobe, recall
# against qps, each against one in-process index (RESULT scale ...). On
# loopback; BENCH_SCALE_HOSTS=1 puts each shard and the coordinator on a
# network namespace host of its own (needs root; the same cores either way).
# bench-scale-plot draws docs/img/scale-*.png from its logs.
bench-scale: $(BIN)/shoal-bench $(BIN)/shoal-shard $(BIN)/shoal-coordinator
	@bash bench/run_scale.sh $(BIN)

bench-scale-plot: bench-deps
	@/usr/bin/python3 bench/plot_scale.py build/bench-scale docs/img

bench-route: $(BIN)/shoal $(BIN)/shoal-shard $(BIN)/shoal-coordinator
	@SHOAL_DATASETS=$${SHOAL_DATASETS:-$(DATASETS)} bash bench/run_route.sh $(BIN)

# RSS of the coordinator and each of 3 shards (ports 7905-7908) under two
# clients' mixed search/insert/delete for BENCH_LEAK_SECONDS, growth measured
# after a warm-up of a fifth of the run (RESULT leak ...). A benchmark: the
# goal, growth < 5 %, is read, not enforced.
BENCH_LEAK_SECONDS ?= 600
bench-leak: $(BIN)/shoal-bench $(BIN)/shoal-shard $(BIN)/shoal-coordinator
	@mkdir -p $(BUILD)/tmp
	@SHOAL_TMP=$(abspath $(BUILD))/tmp SHOAL_LOG_LEVEL=$${SHOAL_LOG_LEVEL:-warn} \
	    $(BIN)/shoal-bench leak --seconds $(BENCH_LEAK_SECONDS) \
	    --shard-bin $(BIN)/shoal-shard --coordinator-bin $(BIN)/shoal-coordinator

# --------------------------------------------------------------------------
# Replication on many hosts (issue 10; both need root for network namespaces)
# --------------------------------------------------------------------------
.PHONY: test-cluster-hosts bench-replication

# tests/test_replication.c: 4 shard hosts and a coordinator host
# (tests/test_hosts.h), R=2, faults under searches and inserts. The suite is
# in TEST_BINS like every other, but `make test` only builds it (it skips
# itself without SHOAL_TEST_CLUSTER_HOSTS=1: it takes minutes); here it runs,
# one test at a time (the faults are in the timing of two busy cores).
# SHOAL_TEST_SEED=N repeats the randomized test's schedule (its seed is printed).
# tests/test_growth.c: the same hosts, shards added, drained and removed
# under load (issue 12).
test-cluster-hosts: $(HOSTS_TEST_BINS) $(BIN)/shoal-shard $(BIN)/shoal-coordinator
	@mkdir -p $(BUILD)/tmp $(BUILD)/logs
	@for t in $(HOSTS_TEST_BINS); do \
	    $(TEST_ENV) SHOAL_TEST_CLUSTER_HOSTS=1 $$t --jobs=1 --verbose \
	        2>&1 | tee $(BUILD)/logs/$$(basename $$t).log; \
	    rc=$${PIPESTATUS[0]}; [ $$rc -eq 0 ] || exit $$rc; \
	done

# Data: siftsmall from $(DATASETS), or with BENCH_REPL_N=... a generated set
# (`shoal-bench gen` into build/bench-data/gen-N-q1000-k10, made once and
# reused, as bench-cluster does). BENCH_REPL_ARGS="--reps 9 ..." passes options.
BENCH_REPL_N ?=
BENCH_REPL_ARGS ?=
bench-replication: $(BIN)/shoal-bench $(BIN)/shoal-shard $(BIN)/shoal-coordinator
	@if [ -n "$(BENCH_REPL_N)" ]; then \
	    gen=build/bench-data/gen-$(BENCH_REPL_N)-q1000-k10; \
	    if [ ! -f "$$gen/groundtruth.ivecs" ]; then \
	        echo "== generating $$gen"; \
	        $(BIN)/shoal-bench gen --n $(BENCH_REPL_N) --dim 128 --queries 1000 --k 10 \
	            --seed 1 --out "$$gen" || exit 1; \
	    fi; \
	    set -- "$$gen/base.fvecs" "$$gen/query.fvecs" "$$gen/groundtruth.ivecs"; \
	else \
	    d=$(DATASETS)/siftsmall; \
	    set -- "$$d/siftsmall_base.fvecs" "$$d/siftsmall_query.fvecs" \
	        "$$d/siftsmall_groundtruth.ivecs"; \
	fi; \
	mkdir -p $(BUILD)/tmp; \
	SHOAL_TMP=$(abspath $(BUILD))/tmp SHOAL_LOG_LEVEL=$${SHOAL_LOG_LEVEL:-warn} \
	    $(BIN)/shoal-bench replication --base "$$1" --queries "$$2" --gt "$$3" \
	    --shard-bin $(BIN)/shoal-shard \
	    --coordinator-bin $(BIN)/shoal-coordinator $(BENCH_REPL_ARGS)

# Online growth (bench/shoal_bench_rebalance.c; needs root): 3 shard hosts
# loaded with generated rows, then a 4th shard added and the lists rebalanced
# onto it while one client searches: single-query p50/p99 before, during and
# after the moves, their rate, recall@10 before and after (RESULT rebalance ...).
# BENCH_REBAL_ARGS="--n 50000 --rate 20 ..." passes options.
.PHONY: bench-rebalance
BENCH_REBAL_ARGS ?=
bench-rebalance: $(BIN)/shoal-bench $(BIN)/shoal-shard $(BIN)/shoal-coordinator
	@mkdir -p $(BUILD)/tmp
	@SHOAL_TMP=$(abspath $(BUILD))/tmp SHOAL_LOG_LEVEL=$${SHOAL_LOG_LEVEL:-warn} \
	    $(BIN)/shoal-bench rebalance --shard-bin $(BIN)/shoal-shard \
	    --coordinator-bin $(BIN)/shoal-coordinator $(BENCH_REBAL_ARGS)

demo: deps
	@$(MAKE) --no-print-directory demo-run

# deploy/demo.sh: one coordinator + three shards on loopback, data and logs in
# DEMO_DIR (default build/demo, wiped first); DEMO_KEEP=1 leaves them running.
demo-run: $(BIN)/shoal-bench $(BIN)/shoal-shard $(BIN)/shoal-coordinator $(BIN)/shoal
	@SHOAL_DATASETS=$${SHOAL_DATASETS:-$(DATASETS)} bash deploy/demo.sh $(BIN)

# --------------------------------------------------------------------------
# Debian package and the deploy test (deploy/deb, deploy/ansible, docs/deploy.md)
# --------------------------------------------------------------------------
# The package holds a CPU-only build and, when CUDA is found, a CUDA build of
# the four programs; /usr/bin/NAME runs the CUDA one where its libraries load.
# The CUDA build is linked without an rpath (Debian packages find libraries
# through ld.so.conf, where NVIDIA's packages put theirs). DEB_VERSION: the
# last commit's date and hash unless given.
DEB_DIR ?= build/deb
DEB_VERSION ?= 0.1.0+git$(shell git log -1 --format=%cd.%h --date=format:%Y%m%d 2>/dev/null || echo 0)
DEB_PROGRAMS := shoal-coordinator shoal-shard shoal shoal-bench
DEB_FILE = $(DEB_DIR)/shoal_$(DEB_VERSION)_amd64.deb

# The version the programs report (shoal_build_info): the package's. Only
# common/prom.o carries it; a stamp rewritten when it changes rebuilds it.
VERSION_STAMP := $(BUILD)/.version
$(shell mkdir -p $(BUILD) && { [ "$$(cat $(VERSION_STAMP) 2>/dev/null)" = '$(DEB_VERSION)' ] || \
    printf '%s\n' '$(DEB_VERSION)' > $(VERSION_STAMP); })
$(BUILD)/common/prom.o: CFLAGS_BASE += -DSHOAL_VERSION='"$(DEB_VERSION)"'
$(BUILD)/common/prom.o: $(VERSION_STAMP)
DEB_CUDA_LDLIBS := $(foreach d,$(CUDA_LIBDIRS),-L$(d)) -lcudart -lcublas -lnccl -lstdc++

# The CPU build's objects live where `make NO_CUDA=1 BUILD=build/nocuda test`
# (.ci/run) puts them, so CI compiles them once; only the links are the deb's.
DEB_CPU_BUILD ?= build/nocuda

deb:
	@$(MAKE) --no-print-directory NO_CUDA=1 BUILD=$(DEB_CPU_BUILD) BIN=$(DEB_DIR)/cpu/bin \
	    $(addprefix $(DEB_DIR)/cpu/bin/,$(DEB_PROGRAMS))
ifneq ($(HAVE_CUDA),)
	@$(MAKE) --no-print-directory BUILD=$(DEB_DIR)/cuda BIN=$(DEB_DIR)/cuda/bin \
	    GPU_LDLIBS='$(DEB_CUDA_LDLIBS)' $(addprefix $(DEB_DIR)/cuda/bin/,$(DEB_PROGRAMS))
endif
	@rm -f $(DEB_DIR)/shoal_*_amd64.deb
	@bash deploy/deb/build-deb.sh $(DEB_VERSION) $(DEB_DIR) $(DEB_DIR)/cpu/bin \
	    $(if $(HAVE_CUDA),$(DEB_DIR)/cuda/bin)
	@if command -v lintian >/dev/null; then \
	    lintian --fail-on error \
	        $(DEB_FILE) && echo "deb: lintian: no errors"; \
	else echo "deb: lintian not installed (make deploy-deps): not checked"; fi
	@echo "deb: $(DEB_FILE)"

deploy-deps:
	@bash deploy/install-deps.sh deploy-deps ansible ansible-lint debootstrap \
	    systemd-container lintian dpkg-dev openssh-client

# Boots 4 Debian 12 hosts with systemd-nspawn, each in its own network
# namespace, and deploys the package with deploy/ansible over SSH; the host
# image is cached in /var/cache/shoal-test (SHOAL_TEST_CACHE), keyed by its
# package list. Needs root.
test-deploy: deploy-deps deb
	@SHOAL_DATASETS=$${SHOAL_DATASETS:-$(DATASETS)} \
	    bash deploy/test-deploy.sh $(DEB_FILE) $(DEB_DIR)/cpu/bin

clean:
	rm -rf build bin

-include $(shell find $(BUILD) -path '$(BUILD)/test-deploy' -prune -o -path '$(BUILD)/tmp' -prune -o -name '*.d' -type f -print 2>/dev/null)
