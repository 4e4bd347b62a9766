/* One-query attention of a decode step, float32 on the CPU: plphp's native decode kernel.
 *
 * Per (sample, KV head) the G query heads of the group are scored against the layer's keys and
 * their softmax weights applied to its values in one pass over the cache, tile by tile, with an
 * online softmax (a running maximum and sum per query row): each key and value row is read from
 * memory once and then reused from the L1 cache by all G rows. See docs/architecture.md, "The
 * decode path of pruned layers".
 *
 * Layout: q [B, Hkv, G, D] contiguous; k and v rows of D contiguous floats at any strides for the
 * sample, head and slot; valid, optional, one byte per slot (0: hidden) at strides for the sample and
 * head (0 broadcasts over heads), read only in the column range [lo, hi); out [B, Hkv, G, D].
 *
 * Built by plphp/backends/native/__init__.py with -O3 -march=native and without -ffast-math (which
 * would change the floating-point mode of the whole process). With AVX-512 and D a multiple of 32 the
 * products are hand-vectorised; otherwise a portable loop is compiled for whatever the machine has.
 * The (sample, KV head) pairs are split over OpenMP threads where it is linked against the OpenMP
 * runtime torch itself uses (one pool of threads, not two competing ones); otherwise it runs on one.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_GROUP 32
#define MAX_DIM 256

typedef struct {
    const float *q, *k, *v;
    const uint8_t *valid;
    float *out;
    long ksb, ksh, ksl, vsb, vsh, vsl, msb, msh;
    int B, H, G, D;
    long L, lo, hi;
    float scale;
} Job;

/* ---------------------------------------------------------------- portable ---------------------- */
#define PORTABLE_TILE 64

static void pair_portable(const Job *job, const float *restrict q, const float *restrict k,
                          const float *restrict v, const uint8_t *restrict valid, float *restrict out) {
    const int G = job->G, D = job->D;
    float scores[MAX_GROUP * PORTABLE_TILE], m[MAX_GROUP], sum[MAX_GROUP], acc[MAX_GROUP * MAX_DIM];
    for (int g = 0; g < G; g++) {
        m[g] = -FLT_MAX;
        sum[g] = 0.f;
    }
    memset(acc, 0, sizeof(float) * G * D);
    for (long l0 = 0; l0 < job->L; l0 += PORTABLE_TILE) {
        const int T = job->L - l0 < PORTABLE_TILE ? (int)(job->L - l0) : PORTABLE_TILE;
        for (int g = 0; g < G; g++)
            for (int t = 0; t < T; t++) {
                const float *kr = k + (l0 + t) * job->ksl;
                float s = 0.f;
                for (int d = 0; d < D; d++) s += q[g * D + d] * kr[d];
                scores[g * PORTABLE_TILE + t] = s * job->scale;
            }
        if (valid && l0 + T > job->lo && l0 < job->hi)
            for (int t = 0; t < T; t++)
                if (!valid[l0 + t])
                    for (int g = 0; g < G; g++) scores[g * PORTABLE_TILE + t] = -FLT_MAX;
        for (int g = 0; g < G; g++) {
            float *sg = scores + g * PORTABLE_TILE, *ag = acc + g * D, top = m[g], total = 0.f;
            for (int t = 0; t < T; t++) top = sg[t] > top ? sg[t] : top;
            const float rescale = expf(m[g] - top);
            for (int t = 0; t < T; t++) total += (sg[t] = expf(sg[t] - top));
            sum[g] = sum[g] * rescale + total;
            m[g] = top;
            for (int d = 0; d < D; d++) ag[d] *= rescale;
            for (int t = 0; t < T; t++) {
                const float *vr = v + (l0 + t) * job->vsl;
                for (int d = 0; d < D; d++) ag[d] += sg[t] * vr[d];
            }
        }
    }
    for (int g = 0; g < G; g++)
        for (int d = 0; d < D; d++) out[g * D + d] = acc[g * D + d] / sum[g];
}

/* ---------------------------------------------------------------- AVX-512 ----------------------- */
#ifdef __AVX512F__
#include <immintrin.h>

#define TILE 128     /* keys per tile: G x TILE scores and the tile's keys stay in L1 */
#define PREFETCH 64  /* rows ahead at which the value loop prefetches keys and values */

/* e^x for x <= 0 (the softmax's shifted scores), to about 2 ulp; below -100 (masked slots) it is 0 or a
 * denormal. */
static inline __m512 exp_ps(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-100.f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.f)));
    return _mm512_scalef_ps(p, n);
}

/* Lane t of the result: the sum of the 16 lanes of p[t]. */
static inline __m512 sum16(const __m512 p[16]) {
    __m512 a[8], b[4], c[2];
    for (int i = 0; i < 8; i++)
        a[i] = _mm512_add_ps(_mm512_unpacklo_ps(p[2 * i], p[2 * i + 1]), _mm512_unpackhi_ps(p[2 * i], p[2 * i + 1]));
    for (int i = 0; i < 4; i++) {
        const __m512d x = _mm512_castps_pd(a[2 * i]), y = _mm512_castps_pd(a[2 * i + 1]);
        b[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    for (int i = 0; i < 2; i++)
        c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0xDD));
    return _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], 0x88), _mm512_shuffle_f32x4(c[0], c[1], 0xDD));
}

/* G and NC (= D / 16) are compile-time constants where pair_avx512 is inlined from pair_dispatch_avx512. */
static inline __attribute__((always_inline)) void pair_avx512(const Job *job, const float *restrict q,
                                                              const float *restrict k, const float *restrict v,
                                                              const uint8_t *restrict valid, float *restrict out,
                                                              const int G, const int NC) {
    const long L = job->L, ksl = job->ksl, vsl = job->vsl;
    float scores[MAX_GROUP * TILE] __attribute__((aligned(64)));
    float m[MAX_GROUP], sum[MAX_GROUP];
    __m512 acc[MAX_GROUP][MAX_DIM / 16];
    const __m512 scale = _mm512_set1_ps(job->scale);
    for (int g = 0; g < G; g++) {
        m[g] = -FLT_MAX;
        sum[g] = 0.f;
        for (int c = 0; c < NC; c++) acc[g][c] = _mm512_setzero_ps();
    }
    for (long l0 = 0; l0 < L; l0 += TILE) {
        const int T = L - l0 < TILE ? (int)(L - l0) : TILE;
        const float *kt = k + l0 * ksl, *vt = v + l0 * vsl;
        /* scores: per row g, 16 keys at a time, each key's D products summed in one lane */
        for (int g = 0; g < G; g++) {
            __m512 qg[MAX_DIM / 16];
            for (int c = 0; c < NC; c++) qg[c] = _mm512_loadu_ps(q + (g * NC + c) * 16);
            for (int t0 = 0; t0 < T; t0 += 16) {
                __m512 p[16];
                const int n = T - t0 < 16 ? T - t0 : 16;
                for (int t = 0; t < 16; t++) {
                    const float *kr = kt + (t0 + (t < n ? t : 0)) * ksl; /* past the end: a copy, unused */
                    __m512 s = _mm512_mul_ps(qg[0], _mm512_loadu_ps(kr));
                    for (int c = 1; c < NC; c++) s = _mm512_fmadd_ps(qg[c], _mm512_loadu_ps(kr + 16 * c), s);
                    p[t] = s;
                }
                _mm512_store_ps(scores + g * TILE + t0, _mm512_mul_ps(sum16(p), scale));
            }
        }
        if (valid && l0 + T > job->lo && l0 < job->hi)
            for (int t = 0; t < T; t++)
                if (!valid[l0 + t])
                    for (int g = 0; g < G; g++) scores[g * TILE + t] = -FLT_MAX;
        /* online softmax: new maximum, rescale what was summed, exponentiate the tile */
        for (int g = 0; g < G; g++) {
            float *sg = scores + g * TILE;
            __m512 top = _mm512_set1_ps(m[g]);
            for (int t0 = 0; t0 < T; t0 += 16) {
                const __mmask16 lanes = T - t0 >= 16 ? 0xFFFF : (__mmask16)((1u << (T - t0)) - 1);
                top = _mm512_mask_max_ps(top, lanes, top, _mm512_load_ps(sg + t0));
            }
            const float peak = _mm512_reduce_max_ps(top);
            const __m512 shift = _mm512_set1_ps(peak);
            __m512 total = _mm512_setzero_ps();
            for (int t0 = 0; t0 < T; t0 += 16) {
                const __mmask16 lanes = T - t0 >= 16 ? 0xFFFF : (__mmask16)((1u << (T - t0)) - 1);
                const __m512 e = _mm512_maskz_mov_ps(lanes, exp_ps(_mm512_sub_ps(_mm512_load_ps(sg + t0), shift)));
                _mm512_store_ps(sg + t0, e);
                total = _mm512_add_ps(total, e);
            }
            const float rescale = expf(m[g] - peak);
            sum[g] = sum[g] * rescale + _mm512_reduce_add_ps(total);
            m[g] = peak;
            if (rescale != 1.f)
                for (int c = 0; c < NC; c++) acc[g][c] = _mm512_mul_ps(acc[g][c], _mm512_set1_ps(rescale));
        }
        /* values: two 16-float columns at a time, every row g accumulating in registers */
        for (int c0 = 0; c0 < NC; c0 += 2) {
            __m512 a0[MAX_GROUP], a1[MAX_GROUP];
            for (int g = 0; g < G; g++) {
                a0[g] = acc[g][c0];
                a1[g] = acc[g][c0 + 1];
            }
            for (int t = 0; t < T; t++) {
                const float *vr = vt + t * vsl + 16 * c0;
                if (c0 == 0 && l0 + t + PREFETCH < L) {
                    const char *kn = (const char *)(kt + (t + PREFETCH) * ksl);
                    const char *vn = (const char *)(vt + (t + PREFETCH) * vsl);
                    for (int c = 0; c < NC; c++) {
                        _mm_prefetch(kn + 64 * c, _MM_HINT_T0);
                        _mm_prefetch(vn + 64 * c, _MM_HINT_T0);
                    }
                }
                const __m512 x0 = _mm512_loadu_ps(vr), x1 = _mm512_loadu_ps(vr + 16);
                for (int g = 0; g < G; g++) {
                    const __m512 w = _mm512_set1_ps(scores[g * TILE + t]);
                    a0[g] = _mm512_fmadd_ps(w, x0, a0[g]);
                    a1[g] = _mm512_fmadd_ps(w, x1, a1[g]);
                }
            }
            for (int g = 0; g < G; g++) {
                acc[g][c0] = a0[g];
                acc[g][c0 + 1] = a1[g];
            }
        }
    }
    for (int g = 0; g < G; g++) {
        const __m512 inv = _mm512_set1_ps(1.f / sum[g]);
        for (int c = 0; c < NC; c++) _mm512_storeu_ps(out + (g * NC + c) * 16, _mm512_mul_ps(acc[g][c], inv));
    }
}

#define PAIR(GROUP)                                                                                      \
    case GROUP:                                                                                          \
        if (NC == 4) pair_avx512(job, q, k, v, valid, out, GROUP, 4);                                    \
        else if (NC == 8) pair_avx512(job, q, k, v, valid, out, GROUP, 8);                               \
        else pair_avx512(job, q, k, v, valid, out, GROUP, NC);                                           \
        return;

static void pair_dispatch_avx512(const Job *job, const float *q, const float *k, const float *v,
                                 const uint8_t *valid, float *out) {
    const int NC = job->D / 16;
    switch (job->G) {
        PAIR(1) PAIR(2) PAIR(3) PAIR(4) PAIR(5) PAIR(6) PAIR(7) PAIR(8)
    default:
        pair_avx512(job, q, k, v, valid, out, job->G, NC);
    }
}
#endif

/* ---------------------------------------------------------------- driver ------------------------ */
static void run_pair(const Job *job, long pair) {
    const long b = pair / job->H, h = pair % job->H;
    const float *q = job->q + pair * job->G * job->D;
    const float *k = job->k + b * job->ksb + h * job->ksh;
    const float *v = job->v + b * job->vsb + h * job->vsh;
    const uint8_t *valid = job->valid ? job->valid + b * job->msb + h * job->msh : 0;
    float *out = job->out + pair * job->G * job->D;
#ifdef __AVX512F__
    if (job->D % 32 == 0) { /* pairs of 16-float columns */
        pair_dispatch_avx512(job, q, k, v, valid, out);
        return;
    }
#endif
    pair_portable(job, q, k, v, valid, out);
}

/* Bit 0: the build targets AVX-512 (the hand-vectorised path); bit 1: it runs on several threads. */
int plphp_isa(void) {
    int flags = 0;
#ifdef __AVX512F__
    flags |= 1;
#endif
#ifdef _OPENMP
    flags |= 2;
#endif
    return flags;
}

/* Returns 0, or 1 when the shape is outside what this kernel serves (the caller falls back). */
int plphp_decode_f32(const float *q, const float *k, long ksb, long ksh, long ksl, const float *v, long vsb,
                     long vsh, long vsl, const uint8_t *valid, long msb, long msh, float *out, int B, int H, int G,
                     int D, long L, float scale, long lo, long hi, int threads) {
    if (G < 1 || G > MAX_GROUP || D < 1 || D > MAX_DIM || L < 1 || B < 1 || H < 1) return 1;
    const Job job = {q, k, v, valid, out, ksb, ksh, ksl, vsb, vsh, vsl, msb, msh, B, H, G, D, L, lo, hi, scale};
    const long pairs = (long)B * H;
    if (threads > pairs) threads = (int)pairs;
    if (threads < 1) threads = 1;
    /* built against the OpenMP runtime torch loaded, so these are torch's own worker threads */
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (long pair = 0; pair < pairs; pair++) run_pair(&job, pair);
    return 0;
}
