/*
 * rng.c - splitmix64 seeding, xoshiro256** 1.0, uniform and Box-Muller normal
 * draws (see rng.h).
 */
#include "common/rng.h"

#include <math.h>

#define S_TWO_PI 6.283185307179586476925286766559

/* The splitmix64 finaliser: a bijective 64-bit mixer (Steele et al. 2014). */
uint64_t shoal_rng_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static uint64_t s_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void shoal_rng_seed(shoal_rng_t *rng, uint64_t seed)
{
    /* splitmix64 fills the state, as the xoshiro authors recommend: it never
     * yields four zero words in a row, but guard anyway. */
    uint64_t state = seed;
    for (int i = 0; i < 4; i++) {
        state += 0x9e3779b97f4a7c15ULL;
        rng->s[i] = shoal_rng_mix64(state);
    }
    if (!(rng->s[0] | rng->s[1] | rng->s[2] | rng->s[3]))
        rng->s[0] = 0x9e3779b97f4a7c15ULL;
}

/* xoshiro256** 1.0 (Blackman and Vigna 2018). */
uint64_t shoal_rng_next(shoal_rng_t *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = s_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s_rotl(s[3], 45);
    return result;
}

double shoal_rng_uniform(shoal_rng_t *rng)
{
    /* The top 53 bits: every double in [0, 1) on the 2^-53 grid, equally likely. */
    return (double)(shoal_rng_next(rng) >> 11) * 0x1.0p-53;
}

/* Box-Muller: two independent standard normals from two uniforms. */
void shoal_rng_normal_pair(shoal_rng_t *rng, double *z0, double *z1)
{
    double u1 = 1.0 - shoal_rng_uniform(rng); /* (0, 1]: log stays finite */
    double u2 = shoal_rng_uniform(rng);
    double radius = sqrt(-2.0 * log(u1));
    *z0 = radius * cos(S_TWO_PI * u2);
    *z1 = radius * sin(S_TWO_PI * u2);
}

double shoal_rng_normal(shoal_rng_t *rng)
{
    /* The state has no room for the second value; dropping it keeps the
     * sequence a pure function of the state. */
    double z0, z1;
    shoal_rng_normal_pair(rng, &z0, &z1);
    return z0;
}

