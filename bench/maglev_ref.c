/*
 * Reference for the Maglev build benchmark: the population algorithm of the Maglev paper
 * (Eisenbud et al., NSDI 2016, section 3.4, Pseudocode 1), written plainly in C.
 *
 *   maglev_ref N M ROUNDS
 *
 * What one build does, exactly as the paper describes it:
 *   - for each backend i < N: offset[i] = h1(key[i]) % M, skip[i] = h2(key[i]) % (M - 1) + 1;
 *   - next[i] = 0 for every backend, entry[j] = -1 for every slot;
 *   - round robin over the backends in order: backend i takes c = permutation[i][next[i]],
 *     advancing next[i] while entry[c] >= 0, then sets entry[c] = i and next[i] += 1; this stops
 *     as soon as M slots are filled.
 * permutation[i][j] = (offset[i] + j * skip[i]) % M, as the paper defines it. The paper fills a
 * precomputed N x M permutation matrix first (for N = 1000, M = 65537 that is 262 MB of 32-bit
 * entries); this program does not: it computes permutation[i][next[i]] when it is probed (one
 * 64-bit multiply-add and one 64-bit `%` per probe), which is the cheaper of the two plain ways.
 * Weights: none; the paper's algorithm is unweighted, so this is the equal-weight case.
 *
 * The key set and the hashes are those of control/benches/maglev.rs and control/src/maglev.rs:
 * key = id * 0x9e3779b97f4a7c15 for id 1..=N; h1 is the SplitMix64 finalizer and h2 the
 * MurmurHash3 fmix64 finalizer, each over the key xored with the same seed as in maglev.rs. So
 * both programs do the same work and, for equal weights, build the same table: this program
 * prints a checksum of its table (entry i written as id i + 1, FNV-1a 64 over the 32-bit values
 * in slot order) that maglev.rs's tests pin for N = 1000, M = 65537.
 *
 * Timing: ROUNDS builds, each timed alone with CLOCK_MONOTONIC; the median is printed. The
 * arrays are allocated once, outside the timed region (the Rust build allocates its table on
 * every call, so this favours the reference). Every build includes hashing the N keys.
 *
 * Output, last line:
 *   RESULT maglev_ref n=N m=M rounds=R ns_per_build=F min_ns=F checksum=0x...
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime under a strict -std= */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define OFFSET_SEED 0x51574c5941524431ULL
#define SKIP_SEED 0x6d61676c65765f32ULL

static uint64_t h1(uint64_t key)
{
	uint64_t z = (key ^ OFFSET_SEED) + 0x9e3779b97f4a7c15ULL;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t h2(uint64_t key)
{
	uint64_t z = key ^ SKIP_SEED;
	z = (z ^ (z >> 33)) * 0xff51afd7ed558ccdULL;
	z = (z ^ (z >> 33)) * 0xc4ceb9fe1a85ec53ULL;
	return z ^ (z >> 33);
}

struct maglev {
	uint64_t n, m;
	const uint64_t *key; /* n keys */
	uint64_t *offset, *skip, *next; /* n each */
	int32_t *entry; /* m slots: a backend index, or -1 */
};

/* The paper's permutation[i][j], computed when it is needed. */
static uint64_t permutation(const struct maglev *t, uint64_t i, uint64_t j)
{
	return (t->offset[i] + j * t->skip[i]) % t->m;
}

static void populate(struct maglev *t)
{
	uint64_t n = t->n, m = t->m;

	for (uint64_t i = 0; i < n; i++) {
		t->offset[i] = h1(t->key[i]) % m;
		t->skip[i] = h2(t->key[i]) % (m - 1) + 1;
		t->next[i] = 0;
	}
	for (uint64_t j = 0; j < m; j++)
		t->entry[j] = -1;

	uint64_t filled = 0;
	for (;;) {
		for (uint64_t i = 0; i < n; i++) {
			uint64_t c = permutation(t, i, t->next[i]);
			while (t->entry[c] >= 0) {
				t->next[i]++;
				c = permutation(t, i, t->next[i]);
			}
			t->entry[c] = (int32_t)i;
			t->next[i]++;
			filled++;
			if (filled == m)
				return;
		}
	}
}

static int is_prime(uint64_t m)
{
	if (m < 2)
		return 0;
	for (uint64_t d = 2; d * d <= m; d++)
		if (m % d == 0)
			return 0;
	return 1;
}

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s N M ROUNDS\n", argv[0]);
		return 2;
	}
	uint64_t n = strtoull(argv[1], NULL, 10), m = strtoull(argv[2], NULL, 10);
	long rounds = strtol(argv[3], NULL, 10);
	if (n < 1 || n > m || !is_prime(m) || m > (1ULL << 31) || rounds < 1) {
		fprintf(stderr, "need 1 <= N <= M, M prime below 2^31, ROUNDS >= 1\n");
		return 2;
	}

	uint64_t *key = malloc(n * sizeof *key);
	struct maglev t = {
		.n = n,
		.m = m,
		.key = key,
		.offset = malloc(n * sizeof *t.offset),
		.skip = malloc(n * sizeof *t.skip),
		.next = malloc(n * sizeof *t.next),
		.entry = malloc(m * sizeof *t.entry),
	};
	double *ns = malloc((size_t)rounds * sizeof *ns);
	if (!key || !t.offset || !t.skip || !t.next || !t.entry || !ns) {
		fprintf(stderr, "out of memory\n");
		return 1;
	}
	for (uint64_t i = 0; i < n; i++)
		key[i] = (i + 1) * 0x9e3779b97f4a7c15ULL;

	populate(&t); /* warm-up: page faults and caches */
	for (long r = 0; r < rounds; r++) {
		double start = now_ns();
		populate(&t);
		ns[r] = now_ns() - start;
	}

	uint64_t sum = 0xcbf29ce484222325ULL; /* FNV-1a 64 over the ids, 4 bytes each, little end first */
	for (uint64_t j = 0; j < m; j++) {
		uint32_t id = (uint32_t)(t.entry[j] + 1);
		for (int b = 0; b < 4; b++) {
			sum ^= (id >> (8 * b)) & 0xff;
			sum *= 0x100000001b3ULL;
		}
	}
	qsort(ns, (size_t)rounds, sizeof *ns, cmp_double);
	double median = rounds % 2 ? ns[rounds / 2] : (ns[rounds / 2 - 1] + ns[rounds / 2]) / 2;
	printf("RESULT maglev_ref n=%llu m=%llu rounds=%ld ns_per_build=%.0f min_ns=%.0f checksum=0x%016llx\n",
	       (unsigned long long)n, (unsigned long long)m, rounds, median, ns[0],
	       (unsigned long long)sum);
	return 0;
}
