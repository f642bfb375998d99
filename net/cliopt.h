/*
 * cliopt.h - the command-line and config-file options of shoal's servers
 * (shoal-shard, shoal-coordinator): one table per program describes each
 * option (name, kind, field, range, --help line); this module parses argv
 * and a `key = value` file into the program's config struct and prints the
 * option list of --help with the defaults.
 *
 * Order: defaults (the caller's), then --config FILE, then the flags, each
 * overriding the one before. The file has one `key = value` per line, keys
 * being the long options without their dashes (`data_dir` is accepted for
 * `data-dir`); `#` starts a comment; a value may be wrapped in double quotes.
 * Unknown keys and options are errors. Every message goes to stderr,
 * prefixed with the program's name; the caller turns a failure into exit
 * status 2.
 *
 * Ownership: the tables and specs are the caller's (static); the config
 * struct is the caller's, written through the table's offsets. No state of
 * its own: thread-safe as long as each call has its own config.
 */
#ifndef SHOAL_CLIOPT_H
#define SHOAL_CLIOPT_H

#include "common/error.h"

#include <stddef.h>
#include <stdio.h>

typedef enum {
    CLIOPT_TEXT,     /* char[size]: a non-empty string (paths) */
    CLIOPT_ENDPOINT, /* char[size]: a string with "://" */
    CLIOPT_SIZE,     /* size_t: a whole number in [min, max] */
    CLIOPT_U32,      /* uint32_t: a whole number in [min, max] (max <= UINT32_MAX) */
    CLIOPT_SECONDS,  /* double: a decimal number in [min, max] */
    CLIOPT_ONOFF,    /* size_t: on (1) | off (0) */
    CLIOPT_DEVICES,  /* char[size]: auto | cpu | gpu:N[,N...], checked by the spec */
    CLIOPT_LEVEL,    /* char[size]: debug|info|warn|error|off */
} cliopt_kind_t;

/* One option; also the config file's key. */
typedef struct {
    const char *name;   /* long option without "--" */
    cliopt_kind_t kind; /* how the value is parsed and checked */
    size_t offset;      /* the field in the caller's config struct */
    size_t size;        /* the field's size (text kinds: its capacity) */
    double min, max;    /* number kinds: accepted range */
    const char *arg;    /* placeholder shown by --help */
    const char *help;   /* one line for --help */
} cliopt_t;

/* offset and size of field f of struct type T, for a table row. */
#define CLIOPT_FIELD(T, f) offsetof(T, f), sizeof(((T *)0)->f)

/* A program's options. */
typedef struct {
    const char *prog;       /* "shoal-shard": prefixes every message */
    const cliopt_t *opts;   /* the table */
    size_t nopts;           /* rows in opts */
    const char *required;   /* a text option that must be set ("data-dir"), or NULL */
    const char *unset_text; /* --help's default for an empty text field; NULL: no default shown */
    size_t line_max;        /* config-file line buffer in bytes, '\n' and '\0' included */
    /* CLIOPT_DEVICES: 0 when text is valid; else non-zero, err may say why. */
    int (*check_devices)(const char *text, shoal_err_t *err);
    void (*usage)(FILE *out); /* prints the whole --help text */
} cliopt_spec_t;

/*
 * Parses argv (after the defaults are in cfg). Returns 0, 1 when --help or
 * -h was given (the usage is printed on stdout and nothing else is parsed),
 * or -1 after printing what is wrong.
 */
int cliopt_parse(const cliopt_spec_t *spec, void *cfg, int argc, char **argv);

/*
 * Prints the option rows of --help: "  --name ARG\n      help [default X; min..max]",
 * the defaults read from defaults (a config struct holding them).
 */
void cliopt_print_options(FILE *out, const cliopt_spec_t *spec, const void *defaults);

/* What cliopt_start returns when the program should go on. */
#define CLIOPT_RUN (-1)

/*
 * A server's first step, cfg holding the defaults: names the log after
 * spec->prog, reads $SHOAL_LOG_LEVEL, parses argv, then applies a
 * "log-level" option when the table has one and it was given. Returns
 * CLIOPT_RUN to go on, else the exit status: 0 after --help, 2 after a
 * usage error (already printed).
 */
int cliopt_start(const cliopt_spec_t *spec, void *cfg, int argc, char **argv);

/* Removes leading and trailing blanks (and a line end) in place; returns the start. */
char *cliopt_trim(char *text);

#endif
