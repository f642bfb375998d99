/*
 * rng.h - reproducible random numbers: a splitmix64-seeded xoshiro256**
 * generator (Blackman and Vigna 2018) with uniform and normal draws, for
 * code that must give the same result for the same seed (HNSW levels,
 * k-means init, calibration samples, the data generator, tests).
 *
 * A pure module (no I/O). A shoal_rng_t is one stream: not thread-safe, give
 * each thread its own (seed them apart, e.g. with shoal_rng_mix64).
 */
#ifndef SHOAL_RNG_H
#define SHOAL_RNG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint64_t s[4]; /* state; never all zero */
} shoal_rng_t;

void shoal_rng_seed(shoal_rng_t *rng, uint64_t seed);
uint64_t shoal_rng_next(shoal_rng_t *rng);
/* Uniform in [0, 1), on the 2^-53 grid. */
double shoal_rng_uniform(shoal_rng_t *rng);
/* Standard normal (one Box-Muller value; the other is dropped). */
double shoal_rng_normal(shoal_rng_t *rng);
/* Two independent standard normals (both Box-Muller values). */
void shoal_rng_normal_pair(shoal_rng_t *rng, double *z0, double *z1);
/* The splitmix64 finaliser: a bijective 64-bit mixer, for deriving seeds. */
uint64_t shoal_rng_mix64(uint64_t x);

#ifdef __cplusplus
}
#endif

#endif
