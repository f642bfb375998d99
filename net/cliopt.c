/*
 * cliopt.c - table-driven options for shoal's servers; cliopt.h is the
 * contract. Messages name where a value came from: "--threads" or
 * "config shard.conf line 3: threads".
 */
#include "net/cliopt.h"

#include "common/log.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Room for "config PATH line N: key" in messages. */
#define S_WHERE_MAX (4096 + 64)

/* ------------------------------------------------------------------------ */
/* Values                                                                   */
/* ------------------------------------------------------------------------ */

char *cliopt_trim(char *text)
{
    while (*text == ' ' || *text == '\t')
        text++;
    size_t len = strlen(text);
    while (len > 0 && (text[len - 1] == ' ' || text[len - 1] == '\t' || text[len - 1] == '\r' ||
                       text[len - 1] == '\n'))
        text[--len] = '\0';
    return text;
}

static const cliopt_t *s_find(const cliopt_spec_t *spec, const char *name, size_t len)
{
    for (size_t i = 0; i < spec->nopts; i++)
        if (strlen(spec->opts[i].name) == len && !strncmp(spec->opts[i].name, name, len))
            return &spec->opts[i];
    return NULL;
}

/* Digits only (no sign, no blanks), no overflow. */
static int s_parse_whole(const char *text, unsigned long long *out)
{
    if (!*text)
        return -1;
    for (const char *p = text; *p; p++)
        if (*p < '0' || *p > '9')
            return -1;
    errno = 0;
    char *end = NULL;
    *out = strtoull(text, &end, 10);
    return errno || *end ? -1 : 0;
}

static int s_set_text(const cliopt_spec_t *spec, const cliopt_t *o, char *field, const char *text,
                      const char *where)
{
    if (!*text) {
        fprintf(stderr, "%s: %s: needs a non-empty value\n", spec->prog, where);
        return -1;
    }
    if (strlen(text) >= o->size) {
        fprintf(stderr, "%s: %s: value longer than %zu characters\n", spec->prog, where,
                o->size - 1);
        return -1;
    }
    if (o->kind == CLIOPT_ENDPOINT && !strstr(text, "://")) {
        fprintf(stderr, "%s: %s: \"%s\" is not an endpoint (tcp://HOST:PORT)\n", spec->prog, where,
                text);
        return -1;
    }
    snprintf(field, o->size, "%s", text);
    return 0;
}

static int s_set_whole(const cliopt_spec_t *spec, const cliopt_t *o, char *field, const char *text,
                       const char *where)
{
    unsigned long long value;
    if (s_parse_whole(text, &value) != 0) {
        fprintf(stderr, "%s: %s: \"%s\" is not a whole number\n", spec->prog, where, text);
        return -1;
    }
    if ((double)value < o->min || (double)value > o->max) {
        fprintf(stderr, "%s: %s: %llu is out of range [%.0f, %.0f]\n", spec->prog, where, value,
                o->min, o->max);
        return -1;
    }
    if (o->kind == CLIOPT_U32)
        *(uint32_t *)(void *)field = (uint32_t)value;
    else
        *(size_t *)(void *)field = (size_t)value;
    return 0;
}

static int s_set_seconds(const cliopt_spec_t *spec, const cliopt_t *o, char *field,
                         const char *text, const char *where)
{
    errno = 0;
    char *end = NULL;
    double value = strtod(text, &end);
    if (!*text || errno || *end || !isfinite(value)) {
        fprintf(stderr, "%s: %s: \"%s\" is not a number\n", spec->prog, where, text);
        return -1;
    }
    if (value < o->min || value > o->max) {
        fprintf(stderr, "%s: %s: %g is out of range [%g, %g]\n", spec->prog, where, value, o->min,
                o->max);
        return -1;
    }
    *(double *)(void *)field = value;
    return 0;
}

/* Sets option o of cfg from text; prints why and returns -1 when it is wrong. */
static int s_set(const cliopt_spec_t *spec, void *cfg, const cliopt_t *o, const char *text,
                 const char *where)
{
    char *field = (char *)cfg + o->offset;
    switch (o->kind) {
    case CLIOPT_TEXT:
    case CLIOPT_ENDPOINT:
        return s_set_text(spec, o, field, text, where);
    case CLIOPT_SIZE:
    case CLIOPT_U32:
        return s_set_whole(spec, o, field, text, where);
    case CLIOPT_SECONDS:
        return s_set_seconds(spec, o, field, text, where);
    case CLIOPT_ONOFF:
        if (!strcmp(text, "on") || !strcmp(text, "off")) {
            *(size_t *)(void *)field = !strcmp(text, "on");
            return 0;
        }
        fprintf(stderr, "%s: %s: expected on or off, got \"%s\"\n", spec->prog, where, text);
        return -1;
    case CLIOPT_DEVICES: {
        shoal_err_t err;
        shoal_err_clear(&err);
        if (spec->check_devices(text, &err) != 0 || strlen(text) >= o->size) {
            fprintf(stderr, "%s: %s: expected auto, cpu or gpu:N[,N...], got \"%s\"%s%s\n",
                    spec->prog, where, text, err.msg[0] ? ": " : "", err.msg);
            return -1;
        }
        snprintf(field, o->size, "%s", text);
        return 0;
    }
    case CLIOPT_LEVEL: {
        shoal_log_level_t level;
        if (shoal_log_parse_level(text, &level) != 0 || strlen(text) >= o->size) {
            fprintf(stderr, "%s: %s: expected debug, info, warn, error or off, got \"%s\"\n",
                    spec->prog, where, text);
            return -1;
        }
        snprintf(field, o->size, "%s", text);
        return 0;
    }
    }
    return -1;
}

/* ------------------------------------------------------------------------ */
/* The config file                                                          */
/* ------------------------------------------------------------------------ */

/* One line, comment removed; 0 for a blank one, -1 after printing what is wrong. */
static int s_config_line(const cliopt_spec_t *spec, void *cfg, const char *path, size_t lineno,
                         char *line)
{
    char *hash = strchr(line, '#');
    if (hash)
        *hash = '\0';
    char *text = cliopt_trim(line);
    if (!*text)
        return 0;
    char *eq = strchr(text, '=');
    if (!eq) {
        fprintf(stderr, "%s: config %s line %zu: expected key = value, got \"%s\"\n", spec->prog,
                path, lineno, text);
        return -1;
    }
    *eq = '\0';
    char *key = cliopt_trim(text);
    char *value = cliopt_trim(eq + 1);
    size_t vlen = strlen(value);
    if (vlen >= 2 && value[0] == '"' && value[vlen - 1] == '"') {
        value[vlen - 1] = '\0';
        value++;
    }
    for (char *p = key; *p; p++)
        if (*p == '_')
            *p = '-';
    const cliopt_t *o = s_find(spec, key, strlen(key));
    if (!o) {
        fprintf(stderr, "%s: config %s line %zu: unknown key \"%s\"\n", spec->prog, path, lineno,
                key);
        return -1;
    }
    char where[S_WHERE_MAX];
    snprintf(where, sizeof where, "config %s line %zu: %s", path, lineno, key);
    return s_set(spec, cfg, o, value, where);
}

static int s_config_load(const cliopt_spec_t *spec, void *cfg, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "%s: --config: cannot open %s: %s\n", spec->prog, path, strerror(errno));
        return -1;
    }
    size_t cap = spec->line_max;
    char *line = malloc(cap);
    if (!line) {
        fprintf(stderr, "%s: --config: out of memory\n", spec->prog);
        fclose(f);
        return -1;
    }
    int rc = 0;
    for (size_t lineno = 1; rc == 0 && fgets(line, (int)cap, f); lineno++) {
        size_t len = strlen(line);
        if (len == cap - 1 && line[len - 1] != '\n' && !feof(f)) {
            fprintf(stderr, "%s: config %s line %zu: line too long\n", spec->prog, path, lineno);
            rc = -1;
            break;
        }
        rc = s_config_line(spec, cfg, path, lineno, line);
    }
    free(line);
    fclose(f);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* The command line                                                         */
/* ------------------------------------------------------------------------ */

/* Applies every --config FILE / --config=FILE, in order, before any flag. */
static int s_parse_configs(const cliopt_spec_t *spec, void *cfg, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *value = NULL;
        if (!strncmp(argv[i], "--config=", 9)) {
            value = argv[i] + 9;
        } else if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: --config needs a value\n", spec->prog);
                return -1;
            }
            value = argv[++i];
        } else {
            continue;
        }
        if (s_config_load(spec, cfg, value) != 0)
            return -1;
    }
    return 0;
}

static int s_parse_flags(const cliopt_spec_t *spec, void *cfg, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, "%s: unexpected argument \"%s\" (see --help)\n", spec->prog, arg);
            return -1;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        if (len == 6 && !strncmp(name, "config", 6)) {
            if (!eq)
                i++;
            continue;
        }
        const cliopt_t *o = s_find(spec, name, len);
        if (!o) {
            fprintf(stderr, "%s: unknown option --%.*s (see --help)\n", spec->prog, (int)len, name);
            return -1;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (!value) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: --%s needs a value\n", spec->prog, o->name);
                return -1;
            }
            value = argv[++i];
        }
        char where[96];
        snprintf(where, sizeof where, "--%s", o->name);
        if (s_set(spec, cfg, o, value, where) != 0)
            return -1;
    }
    return 0;
}

int cliopt_parse(const cliopt_spec_t *spec, void *cfg, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            spec->usage(stdout);
            return 1;
        }
    }
    if (s_parse_configs(spec, cfg, argc, argv) != 0 || s_parse_flags(spec, cfg, argc, argv) != 0)
        return -1;
    const cliopt_t *req =
        spec->required ? s_find(spec, spec->required, strlen(spec->required)) : NULL;
    if (req && !((const char *)cfg + req->offset)[0]) {
        fprintf(stderr, "%s: --%s is required (see --help)\n", spec->prog, req->name);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* --help                                                                   */
/* ------------------------------------------------------------------------ */

void cliopt_print_options(FILE *out, const cliopt_spec_t *spec, const void *defaults)
{
    for (size_t i = 0; i < spec->nopts; i++) {
        const cliopt_t *o = &spec->opts[i];
        const char *field = (const char *)defaults + o->offset;
        char value[64];
        int number = 1;
        switch (o->kind) {
        case CLIOPT_SIZE:
            snprintf(value, sizeof value, "%zu", *(const size_t *)(const void *)field);
            break;
        case CLIOPT_U32:
            snprintf(value, sizeof value, "%u", (unsigned)*(const uint32_t *)(const void *)field);
            break;
        case CLIOPT_SECONDS:
            snprintf(value, sizeof value, "%g", *(const double *)(const void *)field);
            break;
        case CLIOPT_ONOFF:
            snprintf(value, sizeof value, "%s",
                     *(const size_t *)(const void *)field ? "on" : "off");
            number = 0;
            break;
        default:
            snprintf(value, sizeof value, "%s",
                     *field             ? field
                     : spec->unset_text ? spec->unset_text
                                        : "");
            number = 0;
            break;
        }
        int is_required = spec->required && !strcmp(o->name, spec->required);
        fprintf(out, "  --%s %s\n      %s", o->name, o->arg, o->help);
        if (number)
            fprintf(out, " [default %s; %.*f..%.0f]\n", value, o->min < 1 && o->min > 0 ? 2 : 0,
                    o->min, o->max);
        else if (o->kind == CLIOPT_LEVEL || is_required || !value[0])
            fprintf(out, "\n");
        else
            fprintf(out, " [default %s]\n", value);
    }
}

int cliopt_start(const cliopt_spec_t *spec, void *cfg, int argc, char **argv)
{
    shoal_log_set_ident(spec->prog);
    shoal_log_init_from_env();
    int rc = cliopt_parse(spec, cfg, argc, argv);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    const cliopt_t *o = s_find(spec, "log-level", 9);
    const char *level = o ? (const char *)cfg + o->offset : "";
    shoal_log_level_t parsed;
    if (level[0] && shoal_log_parse_level(level, &parsed) == 0)
        shoal_log_set_level(parsed);
    return CLIOPT_RUN;
}
