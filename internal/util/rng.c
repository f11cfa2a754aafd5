/*
 * rng: see rng.h.  xoshiro256** steps by shifts, rotations and xors only, so
 * the integer stream is the same on every platform; uniform doubles take the
 * top 53 bits times 2^-53, also exact.
 */
#include "util/rng.h"

#include <math.h>

uint64_t util_rng_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

void util_rng_init(struct util_rng *r, uint64_t seed)
{
    uint64_t sm = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = util_rng_splitmix64(&sm);
    r->has_spare = 0;
    r->spare = 0.0;
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t util_rng_next(struct util_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double util_rng_uniform(struct util_rng *r)
{
    return (double)(util_rng_next(r) >> 11) * 0x1.0p-53;
}

double util_rng_normal(struct util_rng *r)
{
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    double u, v, s;
    do {
        u = 2.0 * util_rng_uniform(r) - 1.0;
        v = 2.0 * util_rng_uniform(r) - 1.0;
        s = u * u + v * v;
    } while (s >= 1.0 || !(s > 0.0));
    double f = sqrt(-2.0 * log(s) / s);
    r->spare = v * f;
    r->has_spare = 1;
    return u * f;
}

/* The full 128-bit product of a and b, as high and low halves. */
static void mul64(uint64_t a, uint64_t b, uint64_t *hi, uint64_t *lo)
{
    uint64_t a0 = a & 0xffffffffu, a1 = a >> 32, b0 = b & 0xffffffffu, b1 = b >> 32;
    uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    uint64_t mid = (p00 >> 32) + (p01 & 0xffffffffu) + (p10 & 0xffffffffu);
    *lo = (mid << 32) | (p00 & 0xffffffffu);
    *hi = p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
}

int64_t util_rng_range(struct util_rng *r, int64_t lo, int64_t hi)
{
    if (hi <= lo)
        return lo;
    /* The span minus one fits in 64 bits even for INT64_MIN..INT64_MAX. */
    uint64_t span1 = (uint64_t)hi - (uint64_t)lo;
    if (span1 == UINT64_MAX)
        return (int64_t)util_rng_next(r);
    uint64_t n = span1 + 1, mhi, mlo;
    mul64(util_rng_next(r), n, &mhi, &mlo);
    if (mlo < n) {
        uint64_t threshold = (0 - n) % n;
        while (mlo < threshold)
            mul64(util_rng_next(r), n, &mhi, &mlo);
    }
    return (int64_t)((uint64_t)lo + mhi);
}
