/*
 * prom.c - the Prometheus text format writer (prom.h).
 *
 * Every line is formatted whole into a stack buffer first and then appended
 * or left out whole, so a text that ran out of room is still a valid
 * exposition: it only lacks its last samples. Why not stop at the first
 * line that does not fit: a family written later may be small and matter
 * more (build info, health), and each line stands alone in the format.
 */
#include "common/prom.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SHOAL_VERSION
#define SHOAL_VERSION "unknown"
#endif

/* Longest single line written (a sample: name, labels, value). */
#define S_LINE_MAX (PROM_LABELS_MAX + 256)
/* First allocation of a text. */
#define S_TEXT_FIRST ((size_t)16 << 10)

const double prom_duration_bounds[PROM_DURATION_NBOUNDS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,    0.25,    0.5,    1.0,   2.5,    5.0,   10.0, 30.0,
};

/* ------------------------------------------------------------------------ */
/* The text                                                                 */
/* ------------------------------------------------------------------------ */

void prom_text_init(prom_text_t *t, size_t max)
{
    memset(t, 0, sizeof *t);
    t->max = max ? max : PROM_TEXT_MAX_DEFAULT;
}

void prom_text_fini(prom_text_t *t)
{
    free(t->data);
    memset(t, 0, sizeof *t);
}

void prom_text_reset(prom_text_t *t)
{
    t->len = 0;
    t->cut = 0;
    if (t->data)
        t->data[0] = '\0';
}

/* Room for need more bytes and a NUL within max: 0, or -1 (t marked cut). */
static int s_reserve(prom_text_t *t, size_t need)
{
    if (t->len + need + 1 > t->max) {
        t->cut = 1;
        return -1;
    }
    if (t->len + need + 1 <= t->cap)
        return 0;
    size_t cap = t->cap ? t->cap : S_TEXT_FIRST;
    while (cap < t->len + need + 1)
        cap *= 2;
    if (cap > t->max)
        cap = t->max;
    char *grown = realloc(t->data, cap);
    if (!grown) {
        t->cut = 1;
        return -1;
    }
    t->data = grown;
    t->cap = cap;
    return 0;
}

/* Appends one formatted line (its '\n' included in fmt), or nothing. */
__attribute__((format(printf, 2, 3))) static void s_line(prom_text_t *t, const char *fmt, ...)
{
    char line[S_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line) {
        t->cut = 1;
        return;
    }
    if (s_reserve(t, (size_t)n) != 0)
        return;
    memcpy(t->data + t->len, line, (size_t)n + 1);
    t->len += (size_t)n;
}

/* A value as the format spells it: +Inf, -Inf, NaN, or a float Go parses. */
static void s_format_value(double v, char *buf, size_t cap)
{
    if (isnan(v))
        snprintf(buf, cap, "NaN");
    else if (isinf(v))
        snprintf(buf, cap, "%s", v > 0 ? "+Inf" : "-Inf");
    else
        snprintf(buf, cap, "%.15g", v);
}

static const char *s_type_name(prom_type_t type)
{
    switch (type) {
    case PROM_COUNTER:
        return "counter";
    case PROM_HISTOGRAM:
        return "histogram";
    case PROM_GAUGE:
    default:
        return "gauge";
    }
}

void prom_family(prom_text_t *t, const char *name, prom_type_t type, const char *help)
{
    /* HELP may not hold a raw line end or backslash; ours are plain sentences. */
    s_line(t, "# HELP %s %s\n", name, help);
    s_line(t, "# TYPE %s %s\n", name, s_type_name(type));
}

void prom_sample(prom_text_t *t, const char *name, const prom_labels_t *labels, double value)
{
    char v[64];
    s_format_value(value, v, sizeof v);
    if (labels && labels->len)
        s_line(t, "%s{%s} %s\n", name, labels->text, v);
    else
        s_line(t, "%s %s\n", name, v);
}

void prom_sample_u64(prom_text_t *t, const char *name, const prom_labels_t *labels,
                     uint64_t value)
{
    if (labels && labels->len)
        s_line(t, "%s{%s} %" PRIu64 "\n", name, labels->text, value);
    else
        s_line(t, "%s %" PRIu64 "\n", name, value);
}

void prom_metric(prom_text_t *t, const char *name, prom_type_t type, const char *help, double value)
{
    prom_family(t, name, type, help);
    prom_sample(t, name, NULL, value);
}

void prom_metric_u64(prom_text_t *t, const char *name, prom_type_t type, const char *help,
                     uint64_t value)
{
    prom_family(t, name, type, help);
    prom_sample_u64(t, name, NULL, value);
}

/* ------------------------------------------------------------------------ */
/* Labels                                                                   */
/* ------------------------------------------------------------------------ */

void prom_labels_init(prom_labels_t *l)
{
    l->text[0] = '\0';
    l->len = 0;
}

/* Appends c (1 or 2 bytes) when it fits with room left for the closing quote. */
static int s_label_put(prom_labels_t *l, const char *c, size_t n)
{
    if (l->len + n + 2 > sizeof l->text)
        return -1;
    memcpy(l->text + l->len, c, n);
    l->len += n;
    l->text[l->len] = '\0';
    return 0;
}

void prom_label(prom_labels_t *l, const char *name, const char *value)
{
    size_t start = l->len;
    size_t nlen = strlen(name);
    if ((start && s_label_put(l, ",", 1) != 0) || s_label_put(l, name, nlen) != 0 ||
        s_label_put(l, "=\"", 2) != 0) {
        l->len = start; /* not even the name fits: the label is left out */
        l->text[start] = '\0';
        return;
    }
    for (const char *p = value; *p; p++) {
        int rc;
        if (*p == '\\')
            rc = s_label_put(l, "\\\\", 2);
        else if (*p == '"')
            rc = s_label_put(l, "\\\"", 2);
        else if (*p == '\n')
            rc = s_label_put(l, "\\n", 2);
        else
            rc = s_label_put(l, p, 1);
        if (rc != 0)
            break; /* cut short: s_label_put kept room for the quote */
    }
    l->text[l->len++] = '"';
    l->text[l->len] = '\0';
}

void prom_label_u64(prom_labels_t *l, const char *name, uint64_t value)
{
    char v[24];
    snprintf(v, sizeof v, "%" PRIu64, value);
    prom_label(l, name, v);
}

/* ------------------------------------------------------------------------ */
/* Histograms                                                               */
/* ------------------------------------------------------------------------ */

void prom_hist_init(prom_hist_t *h, const double *bounds, size_t nbounds)
{
    memset(h, 0, sizeof *h);
    h->bounds = bounds;
    h->nbounds = nbounds <= PROM_HIST_BOUNDS_MAX ? nbounds : PROM_HIST_BOUNDS_MAX;
}

void prom_hist_observe(prom_hist_t *h, double value)
{
    if (isnan(value))
        return;
    size_t b = 0;
    while (b < h->nbounds && value > h->bounds[b])
        b++;
    h->counts[b]++;
    h->sum += value;
    h->count++;
}

void prom_hist_write_counts(prom_text_t *t, const char *name, const prom_labels_t *labels,
                            const double *bounds, size_t nbounds, const uint64_t *counts,
                            double sum, uint64_t count)
{
    char series[256];
    snprintf(series, sizeof series, "%s_bucket", name);
    uint64_t cumulative = 0;
    for (size_t b = 0; b <= nbounds; b++) {
        cumulative += counts[b];
        prom_labels_t with = labels ? *labels : (prom_labels_t){.text = "", .len = 0};
        char le[64];
        s_format_value(b < nbounds ? bounds[b] : INFINITY, le, sizeof le);
        prom_label(&with, "le", le);
        prom_sample_u64(t, series, &with, cumulative);
    }
    snprintf(series, sizeof series, "%s_sum", name);
    prom_sample(t, series, labels, sum);
    snprintf(series, sizeof series, "%s_count", name);
    prom_sample_u64(t, series, labels, count);
}

void prom_hist_write(prom_text_t *t, const char *name, const prom_labels_t *labels,
                     const prom_hist_t *h)
{
    prom_hist_write_counts(t, name, labels, h->bounds, h->nbounds, h->counts, h->sum, h->count);
}

/* ------------------------------------------------------------------------ */
/* The process                                                              */
/* ------------------------------------------------------------------------ */

const char *prom_version(void)
{
    return SHOAL_VERSION;
}

/* Resident bytes from /proc/self/statm (its second field, in pages); 0 when unreadable. */
static uint64_t s_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    unsigned long long size = 0, resident = 0;
    int got = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    if (got != 2 || page <= 0)
        return 0;
    return (uint64_t)resident * (uint64_t)page;
}

void prom_process(prom_text_t *t, const char *role, double start_unix_s, double uptime_s)
{
    prom_labels_t l;
    prom_labels_init(&l);
    prom_label(&l, "version", prom_version());
    prom_label(&l, "role", role);
    prom_family(t, "shoal_build_info", PROM_GAUGE,
                "The program's version and role (value 1).");
    prom_sample_u64(t, "shoal_build_info", &l, 1);

    uint64_t rss = s_rss_bytes();
    if (rss) {
        prom_metric_u64(t, "shoal_process_resident_memory_bytes", PROM_GAUGE,
                        "Resident memory of the process in bytes.", rss);
    }
    prom_metric(t, "shoal_process_start_time_seconds", PROM_GAUGE,
                "When the process started, in seconds since the Unix epoch.", start_unix_s);
    prom_metric(t, "shoal_process_uptime_seconds", PROM_GAUGE,
                "Seconds since the process started (monotonic clock).", uptime_s);
}
