/*
 * hnswlib_bench.cpp - build/native/bin/hnswlib-bench: `shoal-bench hnsw`'s
 * benchmark run against hnswlib (Debian's libhnswlib-dev, header-only), so
 * bench/run_hnsw.sh can compare the two on the same data and the same machine.
 *
 * Everything but the index is shared with or copied from shoal's side, so the
 * difference between the two programs is the index alone:
 *   - the same options, defaults and output lines as bench/shoal_bench_hnsw.c;
 *   - files are read by shoal's common/vecfile.c and recall is common/
 *     groundtruth.c's gt_recall (this program links libshoal_common.a);
 *   - build: addPoint over every row (label = row number) on --threads
 *     threads pulling rows from one shared counter, as hnswlib's own Python
 *     binding does; build_s is the wall time of that;
 *   - search: one query at a time on one thread, setEf(ef) then searchKnn;
 *     each query timed alone for p50/p99, qps = queries / wall time of the
 *     pass, after one untimed warm-up pass at the largest ef;
 *   - metrics: L2Space for l2 (hnswlib's L2 is squared, as shoal's), and
 *     InnerProductSpace for ip and for cosine, where base and queries are
 *     normalised here first (hnswlib 0.6 has no cosine space of its own).
 *
 * bytes_per_vector is counted from hnswlib's own allocations; see
 * s_hnswlib_bytes for what is included.
 *
 * Exit codes: 0 success, 2 usage error, 1 anything that failed while running.
 */
#include "common/distance.h"
#include "common/error.h"
#include "common/groundtruth.h"
#include "common/vecfile.h"

#include <hnswlib/hnswlib.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace
{

const int S_EXIT_RUNTIME = 1;
const int S_EXIT_USAGE = 2;

/* Ranges as in shard/hnsw.h and shoal_bench_hnsw.c, so both accept the same input. */
const size_t S_M_DEFAULT = 16, S_M_MIN = 2, S_M_MAX = 128;
const size_t S_EFC_DEFAULT = 200, S_EFC_MIN = 1, S_EFC_MAX = 4096;
const size_t S_EF_MIN = 1, S_EF_MAX = 65536;
const size_t S_THREADS_MAX = 1024;
const size_t S_K_DEFAULT = 10, S_K_MAX = 4096;
const size_t S_EFS_MAX = 64;
const size_t S_REPEAT_MAX = 101;

struct bench_opts_t {
    const char *base = nullptr;                        /* --base: borrowed from argv */
    const char *queries = nullptr;                     /* --queries: borrowed from argv */
    const char *gt = nullptr;                          /* --gt: borrowed from argv */
    shoal_metric_t metric = SHOAL_METRIC_L2;           /* --metric */
    size_t M = S_M_DEFAULT;                            /* --M */
    size_t ef_construction = S_EFC_DEFAULT;            /* --ef-construction */
    std::vector<size_t> efs{10, 20, 40, 80, 160, 320}; /* --ef list, in the order given */
    size_t threads = 0;                                /* --threads (0 = every core) */
    size_t k = S_K_DEFAULT;                            /* --k */
    uint64_t seed = 0;                                 /* --seed: hnswlib's random_seed */
    size_t repeat = 1;                                 /* --repeat: passes per ef, median shown */
    const char *save = nullptr; /* --save: write the built index here (hnswlib's saveIndex) */
    const char *load = nullptr; /* --load: read it from here instead of building */
};

void s_usage(FILE *out)
{
    fprintf(out, "usage: hnswlib-bench --base F --queries Q --gt G [--metric l2|ip|cosine]\n"
                 "                     [--M M] [--ef-construction E] [--ef 10,20,...]\n"
                 "                     [--threads T] [--k K] [--seed S] [--repeat R]\n"
                 "                     [--save FILE | --load FILE]\n"
                 "\n"
                 "shoal-bench hnsw's benchmark for hnswlib: the same options and output.\n");
}

/* ------------------------------------------------------------------------ */
/* Options (the same rules as bench/shoal_bench.c's parsers)                */
/* ------------------------------------------------------------------------ */

/* A whole decimal number, with a k/m/g suffix (x1000 each) when suffixes. */
bool s_parse_number(const char *name, const char *text, bool suffixes, unsigned long long *out)
{
    if (!text || !*text || !isdigit((unsigned char)text[0])) {
        fprintf(stderr, "hnswlib-bench: %s: expected a number, got \"%s\"\n", name,
                text ? text : "");
        return false;
    }
    errno = 0;
    char *end = nullptr;
    unsigned long long value = strtoull(text, &end, 10);
    unsigned long long scale = 1;
    if (suffixes && (*end == 'k' || *end == 'K'))
        scale = 1000ULL, end++;
    else if (suffixes && (*end == 'm' || *end == 'M'))
        scale = 1000000ULL, end++;
    else if (suffixes && (*end == 'g' || *end == 'G'))
        scale = 1000000000ULL, end++;
    if (errno || *end || value > ULLONG_MAX / scale) {
        fprintf(stderr, "hnswlib-bench: %s: \"%s\" is not a valid number\n", name, text);
        return false;
    }
    *out = value * scale;
    return true;
}

bool s_parse_size(const char *name, const char *text, size_t min, size_t max, size_t *out)
{
    unsigned long long value;
    if (!s_parse_number(name, text, true, &value))
        return false;
    if (value < min || value > max) {
        fprintf(stderr, "hnswlib-bench: %s: %llu is out of range [%zu, %zu]\n", name, value, min,
                max);
        return false;
    }
    *out = (size_t)value;
    return true;
}

bool s_parse_efs(const char *opt, const char *text, std::vector<size_t> *efs)
{
    efs->clear();
    std::string list(text);
    size_t start = 0;
    for (;;) {
        size_t comma = list.find(',', start);
        std::string item = list.substr(start, comma == std::string::npos ? comma : comma - start);
        if (item.empty()) {
            fprintf(stderr, "hnswlib-bench: %s: expected numbers separated by commas, got \"%s\"\n",
                    opt, text);
            return false;
        }
        if (efs->size() == S_EFS_MAX) {
            fprintf(stderr, "hnswlib-bench: %s: at most %zu values\n", opt, S_EFS_MAX);
            return false;
        }
        size_t ef;
        if (!s_parse_size(opt, item.c_str(), S_EF_MIN, S_EF_MAX, &ef))
            return false;
        efs->push_back(ef);
        if (comma == std::string::npos)
            return true;
        start = comma + 1;
    }
}

/* Returns 0, 1 for --help, or -1 after printing one line on stderr. */
int s_parse(int argc, char **argv, bench_opts_t *o)
{
    struct size_opt {
        const char *name;
        size_t min, max;
        size_t *value;
    };
    const size_opt sizes[] = {
        {"--M", S_M_MIN, S_M_MAX, &o->M},
        {"--ef-construction", S_EFC_MIN, S_EFC_MAX, &o->ef_construction},
        {"--threads", 0, S_THREADS_MAX, &o->threads},
        {"--k", 1, S_K_MAX, &o->k},
        {"--repeat", 1, S_REPEAT_MAX, &o->repeat},
    };

    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h"))
            return 1;
        if (strncmp(opt, "--", 2) != 0) {
            fprintf(stderr, "hnswlib-bench: unexpected argument \"%s\"\n", opt);
            return -1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "hnswlib-bench: %s needs a value\n", opt);
            return -1;
        }
        const char *val = argv[++i];

        const size_opt *sz = nullptr;
        for (const size_opt &s : sizes)
            if (!strcmp(opt, s.name))
                sz = &s;
        if (sz) {
            if (!s_parse_size(opt, val, sz->min, sz->max, sz->value))
                return -1;
        } else if (!strcmp(opt, "--ef")) {
            if (!s_parse_efs(opt, val, &o->efs))
                return -1;
        } else if (!strcmp(opt, "--seed")) {
            unsigned long long seed;
            if (!s_parse_number(opt, val, false, &seed))
                return -1;
            o->seed = seed;
        } else if (!strcmp(opt, "--metric")) {
            if (shoal_metric_parse(val, &o->metric) != 0) {
                fprintf(stderr, "hnswlib-bench: --metric: expected l2, ip or cosine, got \"%s\"\n",
                        val);
                return -1;
            }
        } else if (!strcmp(opt, "--save") || !strcmp(opt, "--load")) {
            if (!*val) {
                fprintf(stderr, "hnswlib-bench: %s: expected a file name\n", opt);
                return -1;
            }
            (!strcmp(opt, "--save") ? o->save : o->load) = val;
        } else if (!strcmp(opt, "--base") || !strcmp(opt, "--queries") || !strcmp(opt, "--gt")) {
            if (!*val) {
                fprintf(stderr, "hnswlib-bench: %s: expected a file name\n", opt);
                return -1;
            }
            if (!strcmp(opt, "--base"))
                o->base = val;
            else if (!strcmp(opt, "--queries"))
                o->queries = val;
            else
                o->gt = val;
        } else {
            fprintf(stderr, "hnswlib-bench: unknown option %s\n", opt);
            return -1;
        }
    }

    const char *missing = !o->base      ? "--base"
                          : !o->queries ? "--queries"
                          : !o->gt      ? "--gt"
                                        : nullptr;
    if (missing) {
        fprintf(stderr, "hnswlib-bench: %s is required (see hnswlib-bench --help)\n", missing);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Measuring                                                                */
/* ------------------------------------------------------------------------ */

double s_now()
{
    using clock = std::chrono::steady_clock;
    return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

/* Nearest-rank percentile (0 < p <= 1) of n sorted values, as shoal's side. */
double s_percentile(const std::vector<double> &sorted, double p)
{
    size_t n = sorted.size();
    size_t rank = (size_t)std::ceil(p * (double)n);
    rank = std::min(std::max(rank, (size_t)1), n);
    return sorted[rank - 1];
}

/* Scales each of n rows to unit length; a zero row stays zero. */
void s_normalise(float *rows, size_t n, size_t dim)
{
    for (size_t i = 0; i < n; i++) {
        float *v = rows + i * dim;
        double sum = 0;
        for (size_t j = 0; j < dim; j++)
            sum += (double)v[j] * v[j];
        if (sum > 0) {
            float inv = (float)(1.0 / std::sqrt(sum));
            for (size_t j = 0; j < dim; j++)
                v[j] *= inv;
        }
    }
}

/* glibc's malloc: an 8-byte header, chunks in steps of 16 bytes, 32 at least. */
size_t s_malloc_chunk(size_t request)
{
    size_t chunk = (request + 8 + 15) & ~(size_t)15;
    return chunk < 32 ? 32 : chunk;
}

/*
 * Bytes hnswlib holds for an index, from its members (public in 0.6):
 *   - data_level0_memory_: max_elements_ * size_data_per_element_ (each
 *     element's layer-0 links, its vector and its label, one block);
 *   - upper layers: one malloc per element with level > 0, of
 *     element_levels_[i] * size_links_per_element_ bytes;
 *   - linkLists_ (a pointer per element), element_levels_ (an int each),
 *     link_list_locks_ (a std::mutex each), link_list_update_locks_ (a fixed
 *     65536 mutexes);
 *   - label_lookup_, an unordered_map<labeltype, tableint>: libstdc++ keeps a
 *     node per entry (next pointer, key, value, 24 bytes in a 32-byte chunk)
 *     and an array of bucket pointers;
 *   - the visited-list pool: one list of max_elements_ 16-bit marks per
 *     thread that ever searched or inserted at once (its deque is private,
 *     so `lists` is passed in: the build's thread count).
 * Malloc headers are counted with s_malloc_chunk for the per-element
 * allocations, where they add up; the large blocks' headers are negligible.
 */
size_t s_hnswlib_bytes(const hnswlib::HierarchicalNSW<float> &h, size_t lists)
{
    size_t n = h.cur_element_count;
    size_t bytes = h.max_elements_ * h.size_data_per_element_;
    for (size_t i = 0; i < n; i++)
        if (h.element_levels_[i] > 0)
            bytes += s_malloc_chunk((size_t)h.element_levels_[i] * h.size_links_per_element_);
    bytes += h.max_elements_ * (sizeof(char *) + sizeof(int) + sizeof(std::mutex));
    bytes += h.link_list_update_locks_.size() * sizeof(std::mutex);
    bytes += h.label_lookup_.size() * s_malloc_chunk(sizeof(void *) + sizeof(hnswlib::labeltype) +
                                                     sizeof(hnswlib::tableint));
    bytes += h.label_lookup_.bucket_count() * sizeof(void *);
    bytes += lists * h.max_elements_ * sizeof(hnswlib::vl_type);
    return bytes;
}

/* Every query once, one at a time, at ef; latencies into lat when non-null. */
/* The calling thread's CPU time in seconds (as shoal_bench_hnsw.c). */
double s_thread_cpu()
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Median of v (the lower one for even sizes); v is reordered. */
double s_median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    return v[(v.size() - 1) / 2];
}

double s_search_pass(hnswlib::HierarchicalNSW<float> &index, const float *queries, size_t nq,
                     size_t dim, size_t k, size_t ef, uint64_t *found, double *lat,
                     double *cpu_s = nullptr)
{
    index.setEf(ef);
    double start = s_now(), cpu0 = s_thread_cpu();
    for (size_t q = 0; q < nq; q++) {
        double t0 = s_now();
        auto result = index.searchKnn(queries + q * dim, k);
        double t1 = s_now();
        /* The queue pops the farthest first: fill the row from its end. */
        uint64_t *row = found + q * k;
        std::fill(row, row + k, (uint64_t)UINT64_MAX);
        for (size_t r = result.size(); r > 0; r--) {
            row[r - 1] = (uint64_t)result.top().second;
            result.pop();
        }
        if (lat)
            lat[q] = t1 - t0;
    }
    if (cpu_s)
        *cpu_s = s_thread_cpu() - cpu0;
    return s_now() - start;
}

/* Frees a vecfile_load_* array. */
struct free_deleter {
    void operator()(void *p) const { free(p); }
};

int s_run(const bench_opts_t &o)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    size_t n, dim, nq, qdim, ngt, gtdim;
    std::unique_ptr<float, free_deleter> base(vecfile_load_f32(o.base, &n, &dim, &err));
    if (!base) {
        fprintf(stderr, "hnswlib-bench: --base: %s\n", err.msg);
        return S_EXIT_RUNTIME;
    }
    std::unique_ptr<float, free_deleter> queries(vecfile_load_f32(o.queries, &nq, &qdim, &err));
    if (!queries) {
        fprintf(stderr, "hnswlib-bench: --queries: %s\n", err.msg);
        return S_EXIT_RUNTIME;
    }
    std::unique_ptr<int32_t, free_deleter> gt(vecfile_load_i32(o.gt, &ngt, &gtdim, &err));
    if (!gt) {
        fprintf(stderr, "hnswlib-bench: --gt: %s\n", err.msg);
        return S_EXIT_RUNTIME;
    }
    if (qdim != dim) {
        fprintf(stderr, "hnswlib-bench: --queries %s: dim %zu, expected %zu as in %s\n", o.queries,
                qdim, dim, o.base);
        return S_EXIT_RUNTIME;
    }
    if (ngt != nq) {
        fprintf(stderr, "hnswlib-bench: --gt %s: %zu rows, expected %zu (one per query)\n", o.gt,
                ngt, nq);
        return S_EXIT_RUNTIME;
    }
    if (gtdim < o.k) {
        fprintf(stderr, "hnswlib-bench: --gt %s: %zu ids per row, --k needs %zu\n", o.gt, gtdim,
                o.k);
        return S_EXIT_RUNTIME;
    }

    size_t threads = o.threads;
    if (threads == 0)
        threads = std::max(1u, std::thread::hardware_concurrency());

    if (o.metric == SHOAL_METRIC_COSINE) {
        s_normalise(base.get(), n, dim);
        s_normalise(queries.get(), nq, dim);
    }
    std::unique_ptr<hnswlib::SpaceInterface<float>> space;
    if (o.metric == SHOAL_METRIC_L2)
        space.reset(new hnswlib::L2Space(dim));
    else
        space.reset(new hnswlib::InnerProductSpace(dim));

    printf("n=%zu dim=%zu queries=%zu metric=%s M=%zu ef_construction=%zu threads=%zu k=%zu\n", n,
           dim, nq, shoal_metric_name(o.metric), o.M, o.ef_construction, threads, o.k);
    fflush(stdout);

    std::unique_ptr<hnswlib::HierarchicalNSW<float>> index;
    std::string failure;
    double build_s = 0;
    try {
        if (o.load) {
            /* A saved index (--save of an earlier run on the same base): no build. */
            index.reset(new hnswlib::HierarchicalNSW<float>(space.get(), o.load, false, n));
        } else {
            index.reset(new hnswlib::HierarchicalNSW<float>(space.get(), n, o.M,
                                                            o.ef_construction, (size_t)o.seed));
        }
        size_t to_insert = o.load ? 0 : n;
        std::atomic<size_t> next(0);
        std::mutex failure_lock;
        const float *rows = base.get();
        auto worker = [&]() {
            for (;;) {
                size_t i = next.fetch_add(1);
                if (i >= to_insert)
                    return;
                try {
                    index->addPoint(rows + i * dim, (hnswlib::labeltype)i);
                } catch (const std::exception &e) {
                    std::lock_guard<std::mutex> hold(failure_lock);
                    failure = "row " + std::to_string(i) + ": " + e.what();
                    next.store(to_insert);
                    return;
                }
            }
        };
        double t0 = s_now();
        std::vector<std::thread> pool;
        for (size_t t = 1; t < threads; t++)
            pool.emplace_back(worker);
        worker();
        for (std::thread &t : pool)
            t.join();
        build_s = s_now() - t0;
        if (o.save)
            index->saveIndex(o.save);
    } catch (const std::exception &e) {
        failure = e.what();
    }
    if (!failure.empty()) {
        fprintf(stderr, "hnswlib-bench: building from %s: %s\n", o.base, failure.c_str());
        return S_EXIT_RUNTIME;
    }
    printf("build_s=%.3f bytes_per_vector=%.1f\n", build_s,
           (double)s_hnswlib_bytes(*index, threads) / (double)index->cur_element_count);
    fflush(stdout);
    base.reset();

    std::vector<uint64_t> found(nq * o.k);
    std::vector<double> lat(nq);
    size_t ef_max = *std::max_element(o.efs.begin(), o.efs.end());
    s_search_pass(*index, queries.get(), nq, dim, o.k, ef_max, found.data(), nullptr);

    for (size_t ef : o.efs) {
        /* --repeat passes: the median qps, with the latencies of that pass. */
        std::vector<double> qps, cpu_qps;
        std::vector<std::vector<double>> lats;
        for (size_t r = 0; r < o.repeat; r++) {
            double cpu_s = 0;
            double wall_s = s_search_pass(*index, queries.get(), nq, dim, o.k, ef, found.data(),
                                          lat.data(), &cpu_s);
            qps.push_back((double)nq / wall_s);
            cpu_qps.push_back(cpu_s > 0 ? (double)nq / cpu_s : 0.0);
            std::sort(lat.begin(), lat.end());
            lats.push_back(lat);
        }
        double recall = gt_recall(found.data(), o.k, gt.get(), gtdim, nq, o.k);
        double med = s_median(qps);
        size_t at = (size_t)(std::find(qps.begin(), qps.end(), med) - qps.begin());
        printf("ef=%zu recall@%zu=%.4f qps=%.1f p50_us=%.1f p99_us=%.1f cpu_qps=%.1f runs=%zu\n",
               ef, o.k, recall, med, s_percentile(lats[at], 0.50) * 1e6,
               s_percentile(lats[at], 0.99) * 1e6, s_median(cpu_qps), o.repeat);
        fflush(stdout);
    }
    return 0;
}

} // namespace

int main(int argc, char **argv)
{
    bench_opts_t opts;
    int parsed = s_parse(argc, argv, &opts);
    if (parsed == 1) {
        s_usage(stdout);
        return 0;
    }
    if (parsed != 0)
        return S_EXIT_USAGE;
    return s_run(opts);
}
