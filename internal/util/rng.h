/*
 * rng: a small seeded pseudo-random generator for simulations and tests.
 *
 * xoshiro256** (Blackman and Vigna) for the stream, its 256-bit state filled
 * from the 64-bit seed with splitmix64, so every seed (0 included) gives a
 * usable, distinct stream.  The state is a plain caller-owned struct: no
 * allocation, no global state, and two generators never share anything.
 *
 * Same seed, same sequence, on every platform for the integer and uniform
 * draws.  util_rng_normal goes through log() and sqrt(), so its bits are
 * reproducible for a given C library (which is what byte-identical
 * simulation output on one machine needs).  Not for cryptography.
 */
#ifndef UNDERSTUDY_RNG_H
#define UNDERSTUDY_RNG_H

#include <stdint.h>

struct util_rng {
    uint64_t s[4];
    int has_spare; /* util_rng_normal draws pairs and keeps the second */
    double spare;
};

/* One splitmix64 step: advances *state and returns the next output. */
uint64_t util_rng_splitmix64(uint64_t *state);

/* Seeds r from seed.  Cannot fail. */
void util_rng_init(struct util_rng *r, uint64_t seed);

/* The next 64 random bits. */
uint64_t util_rng_next(struct util_rng *r);

/* A double uniform on [0, 1), 53 random bits. */
double util_rng_uniform(struct util_rng *r);

/*
 * A standard normal draw (mean 0, variance 1), Marsaglia's polar method:
 * each accepted pair of uniforms gives two draws; the second is returned by
 * the next call.
 */
double util_rng_normal(struct util_rng *r);

/*
 * An integer uniform on [lo, hi] (both included), without modulo bias
 * (Lemire's multiply-and-reject).  lo > hi is treated as lo == hi.
 */
int64_t util_rng_range(struct util_rng *r, int64_t lo, int64_t hi);

#endif
