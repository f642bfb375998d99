/*
 * prom.h - the Prometheus text exposition format, version 0.0.4
 * (https://prometheus.io/docs/instrumenting/exposition_formats/), written
 * into a bounded buffer: metric families with their HELP and TYPE lines,
 * samples with escaped labels, fixed-bucket histograms, and the families
 * every shoal process exports about itself (build info, resident memory,
 * start time, uptime). No sockets here: net/http_metrics.h serves the
 * text.
 *
 * Naming (https://prometheus.io/docs/practices/naming/), which callers keep:
 * every family starts with "shoal_", values are in base units (seconds,
 * bytes), counters end in "_total", unit families in "_seconds" / "_bytes",
 * an info family in "_info" with value 1 and its facts as labels. A
 * family's samples follow its prom_family() line with no other family in
 * between, and no family is written twice in one text (the format asks for
 * both).
 *
 * Bounded: a text never holds more than its max bytes. A sample or header
 * that would not fit is left out whole (the text stays valid, line by line)
 * and the text is marked cut; the caller logs that. A label value longer
 * than PROM_LABELS_MAX allows is cut short (collection names and endpoints,
 * the values used, are far shorter).
 *
 * Thread-safety: none of its own; a prom_text_t or prom_hist_t belongs to
 * one thread at a time. Ownership: prom_text_init / prom_text_fini on an
 * embedded value; labels and histograms are plain values.
 */
#ifndef SHOAL_PROM_H
#define SHOAL_PROM_H

#include <stddef.h>
#include <stdint.h>

/* Largest text a process renders; beyond it samples are left out. */
#define PROM_TEXT_MAX_DEFAULT ((size_t)4 << 20)
/* Room for one sample's labels, escaped, in bytes. */
#define PROM_LABELS_MAX 512
/* Most finite bucket bounds a prom_hist_t holds (one more bucket: +Inf). */
#define PROM_HIST_BOUNDS_MAX 24

/* The exposition's content type, for the HTTP reply. */
#define PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

typedef enum {
    PROM_COUNTER,
    PROM_GAUGE,
    PROM_HISTOGRAM,
} prom_type_t;

/* A text being rendered. */
typedef struct {
    char *data; /* len bytes, NUL-terminated (NULL before the first write) */
    size_t len; /* bytes written */
    size_t cap; /* bytes allocated */
    size_t max; /* bytes it may hold at most */
    int cut;    /* a line was left out: no room (max) or no memory */
} prom_text_t;

/* A sample's labels: `name="value",...` as it goes between the braces. */
typedef struct {
    char text[PROM_LABELS_MAX]; /* NUL-terminated */
    size_t len;                 /* bytes in text */
} prom_labels_t;

/*
 * A histogram with fixed upper bounds (ascending, finite; the +Inf bucket
 * is implied). counts are per bucket, not cumulative: the writer sums them.
 */
typedef struct {
    const double *bounds;                       /* nbounds upper bounds (static storage) */
    size_t nbounds;                             /* at most PROM_HIST_BOUNDS_MAX */
    uint64_t counts[PROM_HIST_BOUNDS_MAX + 1];  /* observations per bucket; last: above all */
    double sum;                                 /* sum of the observations */
    uint64_t count;                             /* observations */
} prom_hist_t;

/*
 * Bounds of the request duration histograms, in seconds: 100 us to 30 s,
 * about three per decade (a shard's search takes a few hundred us, a
 * coordinator's train seconds).
 */
extern const double prom_duration_bounds[];
#define PROM_DURATION_NBOUNDS 17

/* ---- the text ---- */

/* An empty text that may grow to max bytes (0: PROM_TEXT_MAX_DEFAULT). */
void prom_text_init(prom_text_t *t, size_t max);
/* Frees the buffer; t is then empty (init again to reuse). */
void prom_text_fini(prom_text_t *t);
/* Empties t, keeping its buffer. */
void prom_text_reset(prom_text_t *t);

/* The "# HELP name help" and "# TYPE name type" lines that open a family. */
void prom_family(prom_text_t *t, const char *name, prom_type_t type, const char *help);

/* A family with its one unlabelled sample (name said once: no mismatch possible). */
void prom_metric(prom_text_t *t, const char *name, prom_type_t type, const char *help,
                 double value);
void prom_metric_u64(prom_text_t *t, const char *name, prom_type_t type, const char *help,
                     uint64_t value);

/* One sample "name{labels} value" (labels NULL or empty: no braces). */
void prom_sample(prom_text_t *t, const char *name, const prom_labels_t *labels, double value);
/* The same with an exact whole number (counters past 2^53 stay exact). */
void prom_sample_u64(prom_text_t *t, const char *name, const prom_labels_t *labels,
                     uint64_t value);

/* ---- labels ---- */

void prom_labels_init(prom_labels_t *l);
/* Appends name="value", escaping \, " and line ends in value. */
void prom_label(prom_labels_t *l, const char *name, const char *value);
void prom_label_u64(prom_labels_t *l, const char *name, uint64_t value);

/* ---- histograms ---- */

/* An empty histogram over bounds (nbounds <= PROM_HIST_BOUNDS_MAX, ascending). */
void prom_hist_init(prom_hist_t *h, const double *bounds, size_t nbounds);
/* Counts one observation (a NaN is ignored). */
void prom_hist_observe(prom_hist_t *h, double value);
/*
 * Writes name_bucket{labels,le=...} (cumulative, +Inf last), name_sum and
 * name_count; the family line (PROM_HISTOGRAM, under the bare name) is the
 * caller's, since one family holds a histogram per label set.
 */
void prom_hist_write(prom_text_t *t, const char *name, const prom_labels_t *labels,
                     const prom_hist_t *h);
/*
 * The same from plain arrays: counts has nbounds + 1 per-bucket entries
 * (the last above every bound), sum and count the totals.
 */
void prom_hist_write_counts(prom_text_t *t, const char *name, const prom_labels_t *labels,
                            const double *bounds, size_t nbounds, const uint64_t *counts,
                            double sum, uint64_t count);

/* ---- the process ---- */

/* The version the programs report: the build's -DSHOAL_VERSION, else "unknown". */
const char *prom_version(void);

/*
 * The families every process exports: shoal_build_info{version,role},
 * shoal_process_resident_memory_bytes (from /proc/self/statm; left out
 * where it cannot be read), shoal_process_start_time_seconds (Unix time)
 * and shoal_process_uptime_seconds (monotonic, so clock steps do not move it).
 */
void prom_process(prom_text_t *t, const char *role, double start_unix_s, double uptime_s);

#endif
