/* dptrain/exact.h: sums whose result does not depend on how the terms are grouped, for
 * deterministic mode (the same bits for any number of ranks). Local; no MPI.
 *
 * Fixed point: a float x is rounded once to the nearest multiple of 2^-e (ties to even) and
 * kept as the integer round(x * 2^e) in an int64. Integer addition is associative, so the
 * sum of any set of such terms is the same whatever the order or grouping (on one rank, or
 * summed by an MPI allreduce of int64 across ranks). The exponent e comes from a bound on
 * |x| that every rank agrees on (dp_fixed_exp): a term of at most the bound keeps
 * DP_FIXED_BITS bits, more than a float's 24, and up to DP_FIXED_MAX_TERMS of them add up
 * without overflow. */
#ifndef DPTRAIN_EXACT_H
#define DPTRAIN_EXACT_H

#include <stddef.h>
#include <stdint.h>

#define DP_FIXED_BITS 50        /* |x| <= bound gives |x * 2^e| <= 2^50 */
#define DP_FIXED_MAX_TERMS 1024 /* 1024 terms of < 2^51 each stay below 2^61 */

/* The exponent e for terms of magnitude at most bound: the largest e with
 * bound * 2^e <= 2^DP_FIXED_BITS (0 if bound is 0). bound must be finite and >= 0. */
int dp_fixed_exp(double bound);

/* acc[i] += round(x[i] * 2^e) for i < n. Each |x[i] * 2^e| must be below 2^51 (a term within
 * the bound of dp_fixed_exp, with a factor 2 to spare for rounding in the terms). */
void dp_fixed_add(int64_t *acc, const float *x, size_t n, int e);

/* acc[i] = round(x[i] * 2^e): the same, for a first term. */
void dp_fixed_set(int64_t *acc, const float *x, size_t n, int e);

/* out[i] = acc[i] * 2^-e, rounded to float (through double: the same bits everywhere). */
void dp_fixed_get(float *out, const int64_t *acc, size_t n, int e);

/* The largest |x[i]|, or +infinity if any x[i] is NaN or infinite. 0 for n == 0. */
float dp_absmax(const float *x, size_t n);

/* out[j] = sum over blocks k = 0, 1, ..., n_blocks-1 of blocks[k * len + j], added in that
 * order in double: a fixed order, so the same bits wherever the blocks were computed. */
void dp_sum_blocks(double *out, const double *blocks, int n_blocks, size_t len);

/* A double's bits as an int64 and back: an int64 sum in which one rank writes a slot and
 * every other rank writes 0 carries that rank's double exactly (a gather by allreduce). */
int64_t dp_f64_bits(double x);
double dp_bits_f64(int64_t b);

#endif
