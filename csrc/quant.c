/* Reduced-precision inference kernels (quant.h): per-row activation
 * conversion, the packed int8 / bf16 GEMMs (AVX-512 and portable), and a
 * recurrent layer forward over them. */
#include "quant.h"
#include "sampling.h"
#include "dispatch.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__GNUC__) && defined(__x86_64__) && \
    (defined(__clang__) || __GNUC__ >= 10)
#define FR_Q_X86 1
#include <immintrin.h>
#else
#define FR_Q_X86 0
#endif

/* Wider SIMD for the conversions and the portable kernels without
 * -march=native: FR_DISPATCHED (dispatch.h) compiles them for AVX-512, AVX2
 * and the baseline; SSE2's baseline has no vector rounding, so nearbyintf
 * would be a libm call per element. */

/* Rows of input converted at a time: bounded scratch for any M. */
#define FR_Q_CHUNK 64
/* A GEMM shares its panels among threads from this many multiply-adds. */
#define FR_Q_PAR_MIN_MACS (1 << 20)
/* A layer's recurrent steps share W_hh's gate units among threads from this
 * many multiply-adds per step (B * G*H * H). Chosen from wall-clock medians of
 * 300 interleaved runs, 1 vs 2 threads, LSTM B=1 T=150 with the split forced
 * on (a loaded 2-core Zen 4 guest): 2 threads lost at H = 96 (37k; int8 0.21
 * vs 0.26 ms, bf16 0.29 vs 0.31), broke even (int8) or won (bf16 0.50 vs
 * 0.39 ms) at H = 128 (65k) and won both at H = 192 (147k): below it the two
 * barriers per step cost more than the halved product saves. */
#define FR_QSTEP_PAR_MIN_MACS (1 << 16)
/* ...and only when W_hh holds at least this many bytes (reduced). A small
 * W_hh at a batch of rows makes each step compute-bound and short, and its
 * two barriers per step lost: LSTM B=32 T=50 I=8 H=64 (32 KiB of int16 W_hh)
 * inference took 2.39 ms on 2 threads against 1.50 ms on 1 (int8), 1.29 vs
 * 1.08 ms (bfloat16), RNN 1.05 vs 0.56 ms (quiet `fastrnn bench`, 2026-11-23);
 * the B=1 H=128 wins above had 128 KiB. */
#define FR_QSTEP_PAR_MIN_BYTES (64 << 10)
/* A smaller W_hh splits the steps by rows instead (as rnn.c's row split):
 * each thread runs every step for its blocks of FR_QROW_BLOCK samples, dealt
 * round robin, against all of W_hh, with no barrier; at least two blocks and
 * FR_QROW_MIN_MACS multiply-adds in the call. At most FR_QROW_TEAM_MAX
 * threads (the workspace holds a conversion and a gate buffer for each). */
#define FR_QROW_BLOCK 8
#define FR_QROW_MIN_MACS (1 << 20)
#define FR_QROW_TEAM_MAX 64

/* ----- dispatch ------------------------------------------------------------------ */

static int fr_qportable_forced = -1; /* -1: FASTRNN_QUANT_PORTABLE not read yet */

void fr_qforce_portable(int on) { fr_qportable_forced = on ? 1 : 0; }

static int fr_qportable(void)
{
    if (fr_qportable_forced < 0) {
        const char *env = getenv("FASTRNN_QUANT_PORTABLE");
        fr_qportable_forced = env && *env && strcmp(env, "0") != 0;
    }
    return fr_qportable_forced;
}

int fr_qfast_available(int kind)
{
#if FR_Q_X86
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw")) return 0;
    if (kind == FR_Q_INT8 || kind == FR_Q_INT16) return __builtin_cpu_supports("avx512vnni");
    if (kind == FR_Q_BF16) return __builtin_cpu_supports("avx512bf16");
#else
    (void)kind;
#endif
    return 0;
}

/* Which kernels run kind's products: FR_QPATH_AVX512 (AVX512-VNNI / BF16
 * where the CPU has them and the float kernels' cap allows AVX-512),
 * FR_QPATH_AVX2 (AVX2 CPUs), else the portable C. */
enum { FR_QPATH_PORTABLE = 0, FR_QPATH_AVX2 = 1, FR_QPATH_AVX512 = 2 };
static int fr_qpath(int kind)
{
    static int cached[5] = {-1, -1, -1, -1, -1};
    if (kind != FR_Q_BF16 && kind != FR_Q_INT8 && kind != FR_Q_INT16) return FR_QPATH_PORTABLE;
    if (cached[kind] < 0) cached[kind] = fr_qfast_available(kind);
    if (fr_qportable()) return FR_QPATH_PORTABLE;
    if (cached[kind] && fr_isa_level() == FR_ISA_AVX512) return FR_QPATH_AVX512;
    if (fr_isa_level() >= FR_ISA_AVX2) return FR_QPATH_AVX2;
    return FR_QPATH_PORTABLE;
}

int fr_qgroup(int kind)
{
    return kind == FR_Q_INT8 ? 4 : kind == FR_Q_BF16 || kind == FR_Q_INT16 ? 2
         : kind == FR_Q_F32 ? 1 : 0;
}

/* Bytes of one converted activation (and packed weight) element. */
static int64_t fr_qelem(int kind)
{
    return kind == FR_Q_INT8 ? 1 : kind == FR_Q_BF16 || kind == FR_Q_INT16 ? 2 : 4;
}

static int64_t fr_qpadded(int64_t n, int64_t to) { return (n + to - 1) / to * to; }

/* ----- activations: one row at a time ----------------------------------------------- */

/* Asymmetric u8 of one row: x ~ sa * (u - zp). The range always holds 0 (so
 * zero is exact); an all-zero row gets sa = 1. Rounding: nearest even. */
FR_DISPATCHED(void, fr_quantize_row_u8,
              (const float *x, int64_t K, int64_t kp, uint8_t *u, float *sa, int32_t *zp),
              (x, K, kp, u, sa, zp))
{
    float lo = 0, hi = 0;
    for (int64_t k = 0; k < K; k++) {
        lo = x[k] < lo ? x[k] : lo;
        hi = x[k] > hi ? x[k] : hi;
    }
    float scale = (hi - lo) / 255.0f;
    if (!(scale > 0)) scale = 1.0f;
    const float inv = 1.0f / scale;
    float z = nearbyintf(-lo * inv);
    z = z < 0 ? 0 : z > 255 ? 255 : z;
    for (int64_t k = 0; k < K; k++) {
        float q = nearbyintf(x[k] * inv) + z;
        q = q < 0 ? 0 : q > 255 ? 255 : q;
        u[k] = (uint8_t)q;
    }
    for (int64_t k = K; k < kp; k++) u[k] = 0;
    *sa = scale;
    *zp = (int32_t)z;
}

/* Symmetric 12-bit of one row (int16 kind): x ~ sa * a, |a| <= FR_Q16_ACT_MAX;
 * an all-zero row gets sa = 1. Rounding: nearest even. */
FR_DISPATCHED(void, fr_quantize_row_s16,
              (const float *x, int64_t K, int64_t kp, int16_t *a, float *sa),
              (x, K, kp, a, sa))
{
    float amax = 0;
    for (int64_t k = 0; k < K; k++) {
        const float v = fabsf(x[k]);
        amax = v > amax ? v : amax;
    }
    float scale = amax / (float)FR_Q16_ACT_MAX;
    if (!(scale > 0)) scale = 1.0f;
    const float inv = 1.0f / scale, top = (float)FR_Q16_ACT_MAX;
    for (int64_t k = 0; k < K; k++) {
        float q = nearbyintf(x[k] * inv);
        q = q < -top ? -top : q > top ? top : q;
        a[k] = (int16_t)q;
    }
    for (int64_t k = K; k < kp; k++) a[k] = 0;
    *sa = scale;
}

/* bfloat16 bits of a finite float, rounded to nearest even. */
static inline uint16_t fr_bf16(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    bits += 0x7FFFu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

static inline float fr_bf16_float(uint16_t b)
{
    uint32_t bits = (uint32_t)b << 16;
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

FR_DISPATCHED(void, fr_round_row_bf16,
              (const float *x, int64_t K, int64_t kp, uint16_t *b),
              (x, K, kp, b))
{
    for (int64_t k = 0; k < K; k++) b[k] = fr_bf16(x[k]);
    for (int64_t k = K; k < kp; k++) b[k] = 0;
}

/* One chunk's converted rows: the rows (kp elements each), and for int8 the
 * scale and zero point of every row (int16: the scale). */
typedef struct {
    void *rows;
    float *sa;
    int32_t *zp;
    int64_t kp;
} fr_qrows;

static int64_t fr_qrows_bytes(const fr_qweight *w, int64_t M)
{
    const int64_t group = fr_qgroup(w->kind), kp = fr_qpadded(w->cols, group);
    const int64_t elem = fr_qelem(w->kind);
    return fr_qpadded(M * kp * elem, 64) + M * (int64_t)(sizeof(float) + sizeof(int32_t));
}

/* Row m of the chunk is A's row rows_of[m] (rows_of NULL: row m), so a
 * ragged step gathers its active samples while it converts them anyway. */
static fr_qrows fr_qrows_convert(const fr_qweight *w, int64_t M, const float *A, int64_t lda,
                                 const int64_t *rows_of, void *scratch)
{
    fr_qrows r;
    const int64_t elem = fr_qelem(w->kind);
    r.kp = fr_qpadded(w->cols, fr_qgroup(w->kind));
    r.rows = scratch;
    r.sa = (float *)((char *)scratch + fr_qpadded(M * r.kp * elem, 64));
    r.zp = (int32_t *)(r.sa + M);
    for (int64_t m = 0; m < M; m++) {
        const float *a = A + (rows_of ? rows_of[m] : m) * lda;
        if (w->kind == FR_Q_INT8)
            fr_quantize_row_u8(a, w->cols, r.kp, (uint8_t *)r.rows + m * r.kp, r.sa + m,
                               r.zp + m);
        else if (w->kind == FR_Q_INT16)
            fr_quantize_row_s16(a, w->cols, r.kp, (int16_t *)r.rows + m * r.kp, r.sa + m);
        else if (w->kind == FR_Q_BF16)
            fr_round_row_bf16(a, w->cols, r.kp, (uint16_t *)r.rows + m * r.kp);
        else /* f32: group 1, no padding */
            memcpy((float *)r.rows + m * r.kp, a, (size_t)w->cols * sizeof(float));
    }
    return r;
}

/* ----- kernels: one panel of FR_Q_PANEL outputs for every row of a chunk ------------ */

/* The outputs of panel p (n0 = p * FR_Q_PANEL, at most FR_Q_PANEL of them). */
static int64_t fr_qpanel_width(const fr_qweight *w, int64_t p)
{
    const int64_t left = w->rows - p * FR_Q_PANEL;
    return left < FR_Q_PANEL ? left : FR_Q_PANEL;
}

/* The portable kernels' outputs of row m (quant_impl.h's FRQ_(store) does the
 * same in vector registers): int8's zero point taken out and both scales
 * applied (int8, int16), or float sums stored as they are (bf16, f32). Two
 * functions, not one reading acc as either type: an if-converted loop could
 * read a float accumulator through an int32 pointer before its stores. */
static void fr_qint_store(const fr_qweight *w, const fr_qrows *r, int64_t m, int64_t p,
                          const int32_t *acc, float *c, int accumulate)
{
    const int64_t n0 = p * FR_Q_PANEL, nw = fr_qpanel_width(w, p);
    const int32_t zp = w->kind == FR_Q_INT8 ? r->zp[m] : 0;
    for (int64_t j = 0; j < nw; j++) {
        const int32_t a = zp ? acc[j] - zp * w->row_sum[n0 + j] : acc[j];
        const float v = (float)a * (r->sa[m] * w->scale[n0 + j]);
        c[n0 + j] = accumulate ? c[n0 + j] + v : v;
    }
}

static void fr_float_store(const fr_qweight *w, int64_t p, const float *acc, float *c,
                           int accumulate)
{
    const int64_t n0 = p * FR_Q_PANEL, nw = fr_qpanel_width(w, p);
    for (int64_t j = 0; j < nw; j++) c[n0 + j] = accumulate ? c[n0 + j] + acc[j] : acc[j];
}

/* One product of the integer kinds: u8 x s8 (int8) or s16 x s16 (int16). */
static inline int32_t fr_qint_product(int kind, const void *a, int64_t ia, const void *w,
                                      int64_t iw)
{
    if (kind == FR_Q_INT8) return (int32_t)((const uint8_t *)a)[ia] * ((const int8_t *)w)[iw];
    return (int32_t)((const int16_t *)a)[ia] * ((const int16_t *)w)[iw];
}

/* int8 (group 4) and int16 (group 2): exact int32 sums (int16: quant.h's bound
 * on |q|). Inlined into one function per kind, so that kind and group are
 * constants there (a run-time group made the loop 8x slower). */
static inline __attribute__((always_inline)) void fr_qint_panel(
    const fr_qweight *w, const fr_qrows *r, int64_t M, int64_t p, float *C, int64_t ldc,
    int accumulate, const int kind, const int group)
{
    const int64_t groups = r->kp / group, panel = p * groups * FR_Q_PANEL * group;
    for (int64_t m = 0; m < M; m++) {
        int32_t acc[FR_Q_PANEL] = {0};
        for (int64_t g = 0; g < groups; g++)
            for (int j = 0; j < FR_Q_PANEL; j++)
                for (int q = 0; q < group; q++)
                    acc[j] += fr_qint_product(kind, r->rows, m * r->kp + g * group + q, w->packed,
                                              panel + (g * FR_Q_PANEL + j) * group + q);
        fr_qint_store(w, r, m, p, acc, C + m * ldc, accumulate);
    }
}

FR_DISPATCHED(void, fr_q8_panel_portable,
              (const fr_qweight *w, const fr_qrows *r, int64_t M, int64_t p, float *C,
               int64_t ldc, int accumulate),
              (w, r, M, p, C, ldc, accumulate))
{
    fr_qint_panel(w, r, M, p, C, ldc, accumulate, FR_Q_INT8, 4);
}

FR_DISPATCHED(void, fr_q16_panel_portable,
              (const fr_qweight *w, const fr_qrows *r, int64_t M, int64_t p, float *C,
               int64_t ldc, int accumulate),
              (w, r, M, p, C, ldc, accumulate))
{
    fr_qint_panel(w, r, M, p, C, ldc, accumulate, FR_Q_INT16, 2);
}

/* The pair order of vdpbf16ps: the odd element's product first. */
FR_DISPATCHED(void, fr_bf16_panel_portable,
              (const fr_qweight *w, const fr_qrows *r, int64_t M, int64_t p, float *C,
               int64_t ldc, int accumulate),
              (w, r, M, p, C, ldc, accumulate))
{
    const int64_t groups = r->kp / 2;
    const uint16_t *P = (const uint16_t *)w->packed + p * groups * FR_Q_PANEL * 2;
    for (int64_t m = 0; m < M; m++) {
        const uint16_t *a = (const uint16_t *)r->rows + m * r->kp;
        float acc[FR_Q_PANEL] = {0};
        for (int64_t g = 0; g < groups; g++) {
            const float a0 = fr_bf16_float(a[2 * g]), a1 = fr_bf16_float(a[2 * g + 1]);
            /* a row's pair read as one 32-bit word, widened by masks and
             * punned by whole-array copies (GCC 12.2 -O3 vectorised the
             * per-element form, pw[2j] and pw[2j+1] widened one by one,
             * into wrong results) */
            uint32_t words[FR_Q_PANEL], even[FR_Q_PANEL], odd[FR_Q_PANEL];
            float w0[FR_Q_PANEL], w1[FR_Q_PANEL];
            memcpy(words, P + g * FR_Q_PANEL * 2, sizeof words);
            for (int j = 0; j < FR_Q_PANEL; j++) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
                even[j] = words[j] & 0xFFFF0000u;
                odd[j] = words[j] << 16;
#else
                even[j] = words[j] << 16;
                odd[j] = words[j] & 0xFFFF0000u;
#endif
            }
            memcpy(w0, even, sizeof w0);
            memcpy(w1, odd, sizeof w1);
            for (int j = 0; j < FR_Q_PANEL; j++) {
                acc[j] += a1 * w1[j];
                acc[j] += a0 * w0[j];
            }
        }
        fr_float_store(w, p, acc, C + m * ldc, accumulate);
    }
}

/* f32 (a weight kept float32: tiny K or N) in k order; no target clones, so
 * no fused multiply-add: the float32 sum of _quantize.reference_matmul. */
static void fr_f32_panel_portable(const fr_qweight *w, const fr_qrows *r, int64_t M, int64_t p,
                                  float *C, int64_t ldc, int accumulate)
{
    const float *P = (const float *)w->packed + p * r->kp * FR_Q_PANEL;
    for (int64_t m = 0; m < M; m++) {
        const float *a = (const float *)r->rows + m * r->kp;
        float acc[FR_Q_PANEL] = {0};
        for (int64_t k = 0; k < r->kp; k++)
            for (int j = 0; j < FR_Q_PANEL; j++) {
                const float prod = a[k] * P[k * FR_Q_PANEL + j];
                acc[j] += prod;
            }
        fr_float_store(w, p, acc, C + m * ldc, accumulate);
    }
}

#if FR_Q_X86
/* int8: vpdpbusd, u8 activations x s8 weights, 4 of each per lane */
#define FRQ_(name) fr_q8_##name##_vnni
#define FRQ_TARGET "avx512f,avx512bw,avx512vnni"
#define FRQ_ACC __m512i
#define FRQ_ZERO() _mm512_setzero_si512()
#define FRQ_DOT(acc, x, w) _mm512_dpbusd_epi32(acc, x, w)
#define FRQ_ACT uint8_t
#define FRQ_W int8_t
#define FRQ_GROUP 4
#define FRQ_INTEGER 1
#define FRQ_ZERO_POINT 1
#include "quant_impl.h"

/* int16: vpdpwssd, s16 activations x s16 weights, 2 of each per lane */
#define FRQ_(name) fr_q16_##name##_vnni
#define FRQ_TARGET "avx512f,avx512bw,avx512vnni"
#define FRQ_ACC __m512i
#define FRQ_ZERO() _mm512_setzero_si512()
#define FRQ_DOT(acc, x, w) _mm512_dpwssd_epi32(acc, x, w)
#define FRQ_ACT int16_t
#define FRQ_W int16_t
#define FRQ_GROUP 2
#define FRQ_INTEGER 1
#define FRQ_ZERO_POINT 0
#include "quant_impl.h"

/* bf16: vdpbf16ps, pairs of bf16 per lane */
#define FRQ_(name) fr_bf16_##name##_avx512
#define FRQ_TARGET "avx512f,avx512bw,avx512bf16"
#define FRQ_ACC __m512
#define FRQ_ZERO() _mm512_setzero_ps()
#define FRQ_DOT(acc, x, w) _mm512_dpbf16_ps(acc, (__m512bh)(x), (__m512bh)(w))
#define FRQ_ACT uint16_t
#define FRQ_W uint16_t
#define FRQ_GROUP 2
#define FRQ_INTEGER 0
#define FRQ_ZERO_POINT 0
#include "quant_impl.h"

/* int16 and int8 on AVX2 CPUs (no VNNI). vpmaddwd multiplies the s16 pairs
 * of a 32-bit lane into one exact int32 sum, as vpdpwssd does before its add
 * (int16: |q| <= 4095, |a| <= 2047). int8's u8 x s8 quads are widened to s16
 * first (vpmovsxbw; the activations zero-extended once per quad): vpmaddubsw
 * would add its pairs in saturating 16 bits (ONNX Runtime's int8 error on
 * such CPUs). A panel's 16 outputs are two ymm of int32 (int16) or four of
 * pair sums (int8, added at the end); the sums go out through
 * fr_qint_store_avx2, fr_qint_store's operations in the same order, so every
 * path gives the same bits. */

/* fr_qint_store for panel p of row m in ymm registers: the same operations
 * in the same order (the scalar stores took 30% of a small LSTM's int8
 * inference, B=32 H=64, on the Zen 3). lo, hi: the sums of outputs 0-7 and
 * 8-15. */
__attribute__((target("avx2,fma"), always_inline)) static inline void fr_qint_store_avx2(
    const fr_qweight *w, const fr_qrows *r, int64_t m, int64_t p, __m256i lo, __m256i hi,
    float *c, int accumulate)
{
    const int64_t n0 = p * FR_Q_PANEL, nw = fr_qpanel_width(w, p);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i k0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)nw), lane);
    const __m256i k1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)nw - 8), lane);
    const __m256 sa = _mm256_set1_ps(r->sa[m]);
    __m256i acc[2] = {lo, hi};
    const __m256i mask[2] = {k0, k1};
    for (int h = 0; h < 2; h++) {
        const int64_t at = n0 + 8 * h;
        if (w->kind == FR_Q_INT8) {
            const __m256i rs = _mm256_maskload_epi32(w->row_sum + at, mask[h]);
            acc[h] = _mm256_sub_epi32(acc[h], _mm256_mullo_epi32(_mm256_set1_epi32(r->zp[m]), rs));
        }
        const __m256 scale = _mm256_mul_ps(sa, _mm256_maskload_ps(w->scale + at, mask[h]));
        __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[h]), scale);
        /* opaque to the compiler: -ffp-contract=fast would fuse the product
         * into the add below, and the portable store rounds it first */
        __asm__("" : "+x"(v));
        if (accumulate) v = _mm256_add_ps(_mm256_maskload_ps(c + at, mask[h]), v);
        _mm256_maskstore_ps(c + at, mask[h], v);
    }
}

__attribute__((target("avx2,fma"), always_inline)) static inline void fr_q16_rows_avx2(
    const int R, const fr_qweight *w, const fr_qrows *r, int64_t m, int64_t p, float *C,
    int64_t ldc, int accumulate)
{
    const int64_t groups = r->kp / 2;
    const int16_t *P = (const int16_t *)w->packed + p * groups * FR_Q_PANEL * 2;
    const int16_t *a = (const int16_t *)r->rows + m * r->kp;
    __m256i acc[4][2];
    for (int i = 0; i < R; i++) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
    for (int64_t g = 0; g < groups; g++) {
        const __m256i w0 = _mm256_loadu_si256((const __m256i *)(P + g * FR_Q_PANEL * 2));
        const __m256i w1 = _mm256_loadu_si256((const __m256i *)(P + g * FR_Q_PANEL * 2 + 16));
        for (int i = 0; i < R; i++) {
            int32_t pair;
            memcpy(&pair, a + i * r->kp + 2 * g, sizeof pair);
            const __m256i x = _mm256_set1_epi32(pair);
            acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(x, w0));
            acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(x, w1));
        }
    }
    for (int i = 0; i < R; i++)
        fr_qint_store_avx2(w, r, m + i, p, acc[i][0], acc[i][1], C + (m + i) * ldc, accumulate);
}

__attribute__((target("avx2,fma"), always_inline)) static inline void fr_q8_rows_avx2(
    const int R, const fr_qweight *w, const fr_qrows *r, int64_t m, int64_t p, float *C,
    int64_t ldc, int accumulate)
{
    const int64_t groups = r->kp / 4;
    const int8_t *P = (const int8_t *)w->packed + p * groups * FR_Q_PANEL * 4;
    const uint8_t *a = (const uint8_t *)r->rows + m * r->kp;
    __m256i acc[2][4]; /* acc[i][q]: lanes 4q..4q+3, two pair sums each */
    for (int i = 0; i < R; i++)
        for (int q = 0; q < 4; q++) acc[i][q] = _mm256_setzero_si256();
    for (int64_t g = 0; g < groups; g++) {
        const int8_t *pg = P + g * FR_Q_PANEL * 4;
        __m256i wq[4];
        for (int q = 0; q < 4; q++)
            wq[q] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(pg + 16 * q)));
        for (int i = 0; i < R; i++) {
            const uint8_t *ai = a + i * r->kp + 4 * g;
            const __m256i x = _mm256_set1_epi64x((int64_t)((uint64_t)ai[0] |
                                                            (uint64_t)ai[1] << 16 |
                                                            (uint64_t)ai[2] << 32 |
                                                            (uint64_t)ai[3] << 48));
            for (int q = 0; q < 4; q++)
                acc[i][q] = _mm256_add_epi32(acc[i][q], _mm256_madd_epi16(x, wq[q]));
        }
    }
    for (int i = 0; i < R; i++) {
        /* hadd gives lanes 0 1 4 5 | 2 3 6 7: the middle 64-bit chunks swapped back */
        const __m256i lo = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[i][0], acc[i][1]), 0xD8);
        const __m256i hi = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[i][2], acc[i][3]), 0xD8);
        fr_qint_store_avx2(w, r, m + i, p, lo, hi, C + (m + i) * ldc, accumulate);
    }
}

/* bfloat16 on AVX2 CPUs (no AVX512-BF16): a lane's pair widened to floats
 * (the even element shifted up, the odd one masked) and added with FMAs in
 * vdpbf16ps's order, the odd element's product first, as the portable
 * kernel does (a product of two bfloat16 values is exact in float32, fused
 * or not). 4 rows x one panel: 8 accumulators, 4 widened weight vectors. */
__attribute__((target("avx2,fma"), always_inline)) static inline void fr_bf16_rows_avx2(
    const int R, const fr_qweight *w, const fr_qrows *r, int64_t m, int64_t p, float *C,
    int64_t ldc, int accumulate)
{
    const int64_t groups = r->kp / 2, n0 = p * FR_Q_PANEL, nw = fr_qpanel_width(w, p);
    const uint16_t *P = (const uint16_t *)w->packed + p * groups * FR_Q_PANEL * 2;
    const uint16_t *a = (const uint16_t *)r->rows + m * r->kp;
    const __m256i high = _mm256_set1_epi32((int)0xFFFF0000u);
    __m256 acc[4][2];
    for (int i = 0; i < R; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int64_t g = 0; g < groups; g++) {
        const uint16_t *pg = P + g * FR_Q_PANEL * 2;
        const __m256i l0 = _mm256_loadu_si256((const __m256i *)pg);
        const __m256i l1 = _mm256_loadu_si256((const __m256i *)(pg + 16));
        const __m256 e0 = _mm256_castsi256_ps(_mm256_slli_epi32(l0, 16));
        const __m256 o0 = _mm256_castsi256_ps(_mm256_and_si256(l0, high));
        const __m256 e1 = _mm256_castsi256_ps(_mm256_slli_epi32(l1, 16));
        const __m256 o1 = _mm256_castsi256_ps(_mm256_and_si256(l1, high));
        for (int i = 0; i < R; i++) {
            const __m256 x0 = _mm256_set1_ps(fr_bf16_float(a[i * r->kp + 2 * g]));
            const __m256 x1 = _mm256_set1_ps(fr_bf16_float(a[i * r->kp + 2 * g + 1]));
            acc[i][0] = _mm256_fmadd_ps(x0, e0, _mm256_fmadd_ps(x1, o0, acc[i][0]));
            acc[i][1] = _mm256_fmadd_ps(x0, e1, _mm256_fmadd_ps(x1, o1, acc[i][1]));
        }
    }
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int i = 0; i < R; i++) { /* fr_float_store's operations */
        float *c = C + (m + i) * ldc + n0;
        for (int h = 0; h < 2; h++) {
            const __m256i k = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)nw - 8 * h), lane);
            __m256 v = acc[i][h];
            if (accumulate) v = _mm256_add_ps(_mm256_maskload_ps(c + 8 * h, k), v);
            _mm256_maskstore_ps(c + 8 * h, k, v);
        }
    }
}

/* Panels [p0, p1) for M rows: int16 and bfloat16 in blocks of 4 rows (8
 * accumulators), int8 in blocks of 2 (8 accumulators and 4 widened weight
 * vectors), then one row at a time (int: its adds wait one cycle each, no
 * latency to hide). */
__attribute__((target("avx2,fma"))) static void fr_qpanels_avx2(
    const fr_qweight *w, const fr_qrows *r, int64_t M, int64_t p0, int64_t p1, float *C,
    int64_t ldc, int accumulate)
{
    for (int64_t p = p0; p < p1; p++) {
        int64_t m = 0;
        if (w->kind == FR_Q_INT16) {
            for (; m + 4 <= M; m += 4) fr_q16_rows_avx2(4, w, r, m, p, C, ldc, accumulate);
            for (; m < M; m++) fr_q16_rows_avx2(1, w, r, m, p, C, ldc, accumulate);
        } else if (w->kind == FR_Q_BF16) {
            for (; m + 4 <= M; m += 4) fr_bf16_rows_avx2(4, w, r, m, p, C, ldc, accumulate);
            for (; m < M; m++) fr_bf16_rows_avx2(1, w, r, m, p, C, ldc, accumulate);
        } else {
            for (; m + 2 <= M; m += 2) fr_q8_rows_avx2(2, w, r, m, p, C, ldc, accumulate);
            for (; m < M; m++) fr_q8_rows_avx2(1, w, r, m, p, C, ldc, accumulate);
        }
    }
}
#endif

/* Panels [p0, p1) (at most FR_Q_BLOCK) for M rows, on `path`'s kernels
 * (fr_qpath). Every output's sum runs in the same order on every path
 * (bfloat16's included; the integer ones are exact). */
#define FR_Q_BLOCK 8
static void fr_qpanels(const fr_qweight *w, const fr_qrows *r, int64_t M, int64_t p0,
                       int64_t p1, float *C, int64_t ldc, int accumulate, int path)
{
#if FR_Q_X86
    const int kind = w->kind;
    if (path == FR_QPATH_AVX512 && kind == FR_Q_INT8) {
        fr_q8_panels_vnni(w, r, M, p0, p1, C, ldc, accumulate);
        return;
    }
    if (path == FR_QPATH_AVX512 && kind == FR_Q_INT16) {
        fr_q16_panels_vnni(w, r, M, p0, p1, C, ldc, accumulate);
        return;
    }
    if (path == FR_QPATH_AVX512 && kind == FR_Q_BF16) {
        fr_bf16_panels_avx512(w, r, M, p0, p1, C, ldc, accumulate);
        return;
    }
    if (path == FR_QPATH_AVX2) {
        fr_qpanels_avx2(w, r, M, p0, p1, C, ldc, accumulate);
        return;
    }
#else
    (void)path;
#endif
    for (int64_t p = p0; p < p1; p++) {
        if (w->kind == FR_Q_INT8)
            fr_q8_panel_portable(w, r, M, p, C, ldc, accumulate);
        else if (w->kind == FR_Q_INT16)
            fr_q16_panel_portable(w, r, M, p, C, ldc, accumulate);
        else if (w->kind == FR_Q_F32)
            fr_f32_panel_portable(w, r, M, p, C, ldc, accumulate);
        else
            fr_bf16_panel_portable(w, r, M, p, C, ldc, accumulate);
    }
}

/* Block b of FR_Q_BLOCK panels (the last one may be short). */
static void fr_qblock(const fr_qweight *w, const fr_qrows *r, int64_t M, int64_t b, float *C,
                      int64_t ldc, int accumulate, int path)
{
    const int64_t panels = (w->rows + FR_Q_PANEL - 1) / FR_Q_PANEL, p0 = b * FR_Q_BLOCK;
    const int64_t p1 = p0 + FR_Q_BLOCK < panels ? p0 + FR_Q_BLOCK : panels;
    fr_qpanels(w, r, M, p0, p1, C, ldc, accumulate, path);
}

/* ----- GEMM ------------------------------------------------------------------------- */

int64_t fr_qgemm_scratch(const fr_qweight *w, int64_t M)
{
    if (!w || !fr_qgroup(w->kind) || M < 0) return -1;
    return fr_qrows_bytes(w, M < FR_Q_CHUNK ? M : FR_Q_CHUNK);
}

static int fr_qweight_check(const fr_qweight *w)
{
    if (!w || !fr_qgroup(w->kind) || w->rows < 1 || w->cols < 1 || !w->packed) return FR_ERR_ARG;
    if (w->kind == FR_Q_INT8 && (!w->scale || !w->row_sum)) return FR_ERR_ARG;
    if (w->kind == FR_Q_INT16 && !w->scale) return FR_ERR_ARG;
    return FR_OK;
}

/* C (M, w->rows) = the rows of A that rows_of names (NULL: A's first M) times
 * w^T; fr_qgemm's arguments checked by the caller. */
static void fr_qgemm_rows(const fr_qweight *w, int64_t M, const float *A, int64_t lda,
                          const int64_t *rows_of, float *C, int64_t ldc, int accumulate,
                          void *scratch, int n_threads)
{
    const int path = fr_qpath(w->kind);
    const int64_t panels = (w->rows + FR_Q_PANEL - 1) / FR_Q_PANEL;
    const int64_t blocks = (panels + FR_Q_BLOCK - 1) / FR_Q_BLOCK;
    for (int64_t m0 = 0; m0 < M; m0 += FR_Q_CHUNK) {
        const int64_t mc = M - m0 < FR_Q_CHUNK ? M - m0 : FR_Q_CHUNK;
        const fr_qrows r = rows_of ? fr_qrows_convert(w, mc, A, lda, rows_of + m0, scratch)
                                   : fr_qrows_convert(w, mc, A + m0 * lda, lda, NULL, scratch);
        const int nt = mc * w->rows * w->cols >= FR_Q_PAR_MIN_MACS ? fr_threads(n_threads) : 1;
        float *c = C + m0 * ldc;
        (void)nt; /* a serial build ignores the pragma */
        if (nt > 1) {
#pragma omp parallel for num_threads(nt) schedule(static)
            for (int64_t b = 0; b < blocks; b++) fr_qblock(w, &r, mc, b, c, ldc, accumulate, path);
        } else { /* no OpenMP region for one thread: a batch-1 step is a few microseconds */
            for (int64_t b = 0; b < blocks; b++) fr_qblock(w, &r, mc, b, c, ldc, accumulate, path);
        }
    }
}

int fr_qgemm(const fr_qweight *w, int64_t M, const float *A, int64_t lda, float *C, int64_t ldc,
             int accumulate, void *scratch, int n_threads)
{
    int rc = fr_qweight_check(w);
    if (rc != FR_OK) return rc;
    if (M < 0 || (M > 0 && (!A || !C || !scratch)) || lda < w->cols || ldc < w->rows)
        return FR_ERR_ARG;
    fr_qgemm_rows(w, M, A, lda, NULL, C, ldc, accumulate, scratch, n_threads);
    return FR_OK;
}

/* ----- one recurrent layer ------------------------------------------------------------- */

/* The layer's workspace regions, in bytes, each 64-byte aligned. */
enum { FR_QW_GATES, FR_QW_GH, FR_QW_H, FR_QW_C, FR_QW_BIAS, FR_QW_PRE, FR_QW_SCRATCH,
       FR_QW_VALID, FR_QW_FIRST, FR_QW_ORDER, FR_QW_REGIONS };

/* The most threads a row-split team of this batch has. */
static int64_t fr_qrow_team_max(int64_t B)
{
    const int64_t blocks = (B + FR_QROW_BLOCK - 1) / FR_QROW_BLOCK;
    return blocks < FR_QROW_TEAM_MAX ? (blocks > 0 ? blocks : 1) : FR_QROW_TEAM_MAX;
}

static void fr_qforward_sizes(const fr_qlayer *L, const fr_shape *s, int64_t *sizes)
{
    const int64_t B = s->batch, H = s->hidden, GH = fr_gates(s->cell) * H, f = sizeof(float);
    const int64_t team = fr_qrow_team_max(B), ih = fr_qgemm_scratch(&L->W_ih, B * s->steps);
    int64_t hh = fr_qgemm_scratch(&L->W_hh, B);
    if (team * fr_qrows_bytes(&L->W_hh, FR_QROW_BLOCK) > hh)
        hh = team * fr_qrows_bytes(&L->W_hh, FR_QROW_BLOCK);
    sizes[FR_QW_GATES] = B * s->steps * GH * f;
    sizes[FR_QW_GH] = B * GH * f;
    sizes[FR_QW_H] = B * H * f;
    sizes[FR_QW_C] = s->cell == FR_LSTM ? B * H * f : 0;
    sizes[FR_QW_BIAS] = GH * f;
    sizes[FR_QW_PRE] = team * GH * f;
    sizes[FR_QW_SCRATCH] = ih > hh ? ih : hh;
    const int64_t ragged = s->lengths ? 1 : 0, index = sizeof(int64_t);
    sizes[FR_QW_VALID] = ragged * B * s->steps * index;
    sizes[FR_QW_FIRST] = ragged * B * index;
    sizes[FR_QW_ORDER] = ragged * (B + s->steps + 1) * index; /* and fr_order_by_length's count */
    for (int i = 0; i < FR_QW_REGIONS; i++) sizes[i] = fr_qpadded(sizes[i], 64);
}

int64_t fr_qforward_workspace(const fr_qlayer *L, const fr_shape *s)
{
    if (!L || fr_check_shape(s, s ? s->hidden : 0) != FR_OK) return -1;
    int64_t sizes[FR_QW_REGIONS], total = 0;
    fr_qforward_sizes(L, s, sizes);
    for (int i = 0; i < FR_QW_REGIONS; i++) total += sizes[i];
    return total;
}

/* With lengths (else NULL): only valid steps are projected and stepped. valid
 * lists X's rows of valid steps, sample by sample; their projections lie in
 * gates in that order, sample b's from row first[b]. order lists the samples
 * longest first (fr_order_by_length): a step's active samples are its first
 * ones, a position keeps its sample at every step (so the threads of a row
 * split, which own positions, never share one), and gh's row m belongs to
 * order[m]. Without lengths, sample b's gates start at row b * T and gh's row
 * m is sample m's. pre and scratch hold a slice per thread of a row-split team. */
typedef struct {
    float *gates, *gh, *h, *c, *bias, *pre;
    void *scratch;
    int64_t *valid, *first, *order;
} fr_qforward_ws;

static void fr_qpoint_ws(const fr_qlayer *L, const fr_shape *s, void *ws, fr_qforward_ws *w)
{
    int64_t sizes[FR_QW_REGIONS];
    fr_qforward_sizes(L, s, sizes);
    void **regions[FR_QW_REGIONS] = {(void **)&w->gates, (void **)&w->gh, (void **)&w->h,
                                     (void **)&w->c, (void **)&w->bias, (void **)&w->pre,
                                     &w->scratch, (void **)&w->valid, (void **)&w->first,
                                     (void **)&w->order};
    char *at = (char *)ws;
    for (int i = 0; i < FR_QW_REGIONS; i++) {
        *regions[i] = sizes[i] ? at : NULL;
        at += sizes[i];
    }
}

/* The fused pass of one sample over units [0, n) of its gates (every pointer
 * but pre at the slice's first unit; gate k at k * H): g its projected gates,
 * gh its W_hh h (no biases yet); pre (G * n) the slice's activations; h, c
 * updated in place; y (unless NULL) receives h. Per unit, the same arithmetic
 * for any slice, so a split step matches a whole one bit for bit. */
FR_DISPATCHED(void, fr_qcell,
              (int cell, int64_t H, int64_t n, const float *g, const float *gh, const float *bias,
               const float *b_ih, const float *b_hh, float *pre, float *h, float *c, float *y),
              (cell, H, n, g, gh, bias, b_ih, b_hh, pre, h, c, y))
{
    const int64_t G = fr_gates(cell);
    if (cell == FR_GRU) {
        for (int64_t k = 0; k < 2; k++)
            for (int64_t j = 0; j < n; j++)
                pre[k * n + j] = g[k * H + j] + b_ih[k * H + j] + gh[k * H + j] + b_hh[k * H + j];
        fr_sigmoid_f32(pre, pre, 2 * n);
        for (int64_t j = 0; j < n; j++)
            pre[2 * n + j] = g[2 * H + j] + b_ih[2 * H + j] + pre[j] * (gh[2 * H + j] + b_hh[2 * H + j]);
        fr_tanh_f32(pre + 2 * n, pre + 2 * n, n);
        for (int64_t j = 0; j < n; j++)
            h[j] = (1 - pre[n + j]) * pre[2 * n + j] + pre[n + j] * h[j];
    } else {
        for (int64_t k = 0; k < G; k++)
            for (int64_t j = 0; j < n; j++)
                pre[k * n + j] = g[k * H + j] + gh[k * H + j] + bias[k * H + j];
        if (cell == FR_LSTM) {
            fr_sigmoid_f32(pre, pre, 2 * n);
            fr_tanh_f32(pre + 2 * n, pre + 2 * n, n);
            fr_sigmoid_f32(pre + 3 * n, pre + 3 * n, n);
            for (int64_t j = 0; j < n; j++) c[j] = pre[n + j] * c[j] + pre[j] * pre[2 * n + j];
            fr_tanh_f32(c, pre + 2 * n, n);
            for (int64_t j = 0; j < n; j++) h[j] = pre[3 * n + j] * pre[2 * n + j];
        } else if (cell == FR_RNN_RELU) {
            for (int64_t j = 0; j < n; j++) h[j] = pre[j] > 0 ? pre[j] : 0;
        } else {
            fr_tanh_f32(pre, h, n);
        }
    }
    if (y) memcpy(y, h, (size_t)n * sizeof(float));
}

static int64_t fr_qlength(const fr_shape *s, int64_t b)
{
    if (!s->lengths) return s->steps;
    const int64_t n = s->lengths[b];
    return n < 0 ? 0 : n > s->steps ? s->steps : n;
}

/* The sample at position m of the order. */
static int64_t fr_qsample(const fr_qforward_ws *w, int64_t m)
{
    return w->order ? w->order[m] : m;
}

/* How many samples are active at step t (t < their length). */
static int64_t fr_qactive(const fr_shape *s, const fr_qforward_ws *w, int64_t t)
{
    if (!w->order) return s->batch;
    int64_t n = 0;
    while (n < s->batch && t < fr_qlength(s, w->order[n])) n++;
    return n;
}

/* Step t's cell update of units [u0, u1) for positions [m0, m1) of the order,
 * of which the first n are active (gh's row m holds position m's W_hh h); an
 * inactive sample's outputs are zero. pre: this slice's G * (u1 - u0). */
static void fr_qcells(const fr_qlayer *L, const fr_shape *s, const fr_qforward_ws *w, int64_t t,
                      int64_t m0, int64_t m1, int64_t n, int64_t u0, int64_t u1, float *pre,
                      float *Y, int64_t ldy)
{
    const int64_t T = s->steps, H = s->hidden, GH = fr_gates(s->cell) * H;
    for (int64_t m = m0; m < m1; m++) {
        const int64_t b = fr_qsample(w, m);
        float *y = Y + (b * T + t) * ldy + u0;
        if (m >= n) {
            memset(y, 0, (size_t)(u1 - u0) * sizeof(float));
            continue;
        }
        const int64_t row = (w->first ? w->first[b] : b * T) + t;
        fr_qcell(s->cell, H, u1 - u0, w->gates + row * GH + u0, w->gh + m * GH + u0,
                 w->bias + u0, L->b_ih + u0, L->b_hh + u0, pre, w->h + b * H + u0,
                 w->c ? w->c + b * H + u0 : NULL, y);
    }
}

/* W_hh's rows of units [u0, u1) in every gate (u0, u1 and H multiples of
 * FR_Q_PANEL: whole panels, each summed as in the whole product). */
static void fr_qhh_units(const fr_qweight *W, const fr_qrows *r, int64_t B, int64_t G, int64_t H,
                         int64_t u0, int64_t u1, float *gh, int path)
{
    for (int64_t k = 0; k < G; k++) {
        const int64_t p1 = (k * H + u1) / FR_Q_PANEL;
        for (int64_t p = (k * H + u0) / FR_Q_PANEL; p < p1; p += FR_Q_BLOCK)
            fr_qpanels(W, r, B, p, p + FR_Q_BLOCK < p1 ? p + FR_Q_BLOCK : p1, gh, G * H, 0, path);
    }
}

/* The team's steps: each thread owns a fixed slice of units of every gate
 * (its W_hh rows stay in its cache), thread 0 converts h once per step. */
static int fr_qsteps_team(const fr_qlayer *L, const fr_shape *s, const fr_qforward_ws *w,
                          float *Y, int64_t ldy, int nt)
{
    const int64_t T = s->steps, H = s->hidden, G = fr_gates(s->cell);
    const int path = fr_qpath(L->W_hh.kind);
    const int64_t panels = H / FR_Q_PANEL;
    fr_qrows r;
    int64_t n = 0;
    int stop = 0;
    (void)nt; /* a serial build ignores the pragma */
#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        const int64_t tid = omp_get_thread_num(), team = omp_get_num_threads();
#else
        const int64_t tid = 0, team = 1;
#endif
        const int64_t u0 = panels * tid / team * FR_Q_PANEL;
        const int64_t u1 = panels * (tid + 1) / team * FR_Q_PANEL;
        for (int64_t step = 0; step < T; step++) {
            const int64_t t = s->reverse ? T - 1 - step : step;
            if (tid == 0) { /* fr_should_stop reads the caller's thread-local watch */
                stop = fr_should_stop();
                n = fr_qactive(s, w, t);
                if (!stop) r = fr_qrows_convert(&L->W_hh, n, w->h, H, w->order, w->scratch);
            }
#pragma omp barrier
            if (stop) break; /* all read the flag written before this barrier */
            if (u1 > u0) {
                fr_qhh_units(&L->W_hh, &r, n, G, H, u0, u1, w->gh, path);
                fr_qcells(L, s, w, t, 0, s->batch, n, u0, u1, w->pre + G * u0, Y, ldy);
            }
#pragma omp barrier
        }
    }
    return stop ? FR_STOPPED : FR_OK;
}

/* The row split's steps (FR_QROW_BLOCK): thread tid converts, multiplies and
 * updates its own blocks of positions; each thread polls the stop request. */
static int fr_qsteps_by_rows(const fr_qlayer *L, const fr_shape *s, const fr_qforward_ws *w,
                             float *Y, int64_t ldy, int nt)
{
    const int64_t B = s->batch, T = s->steps, H = s->hidden, GH = fr_gates(s->cell) * H;
    const int64_t scratch_bytes = fr_qrows_bytes(&L->W_hh, FR_QROW_BLOCK);
    const int watched = fr_stop_watched();
    int stopped = 0;
    (void)nt; /* a serial build ignores the pragma */
#pragma omp parallel num_threads(nt) reduction(| : stopped)
    {
#ifdef _OPENMP
        const int64_t tid = omp_get_thread_num(), team = omp_get_num_threads();
#else
        const int64_t tid = 0, team = 1;
#endif
        void *scratch = (char *)w->scratch + tid * scratch_bytes;
        float *pre = w->pre + tid * GH;
        for (int64_t step = 0; step < T && !stopped; step++) {
            stopped = watched && fr_stop_requested();
            const int64_t t = s->reverse ? T - 1 - step : step, n = fr_qactive(s, w, t);
            for (int64_t i0 = tid * FR_QROW_BLOCK; i0 < B && !stopped; i0 += team * FR_QROW_BLOCK) {
                const int64_t i1 = i0 + FR_QROW_BLOCK < B ? i0 + FR_QROW_BLOCK : B;
                const int64_t rows = (i1 < n ? i1 : n) - i0;
                if (rows > 0) /* on this thread alone */
                    fr_qgemm_rows(&L->W_hh, rows, w->order ? w->h : w->h + i0 * H, H,
                                  w->order ? w->order + i0 : NULL, w->gh + i0 * GH, GH, 0,
                                  scratch, 1);
                fr_qcells(L, s, w, t, i0, i1, n, 0, H, pre, Y, ldy);
            }
        }
    }
    return stopped ? FR_STOPPED : FR_OK;
}

/* How the steps share threads: nth of them, split by rows (a W_hh under
 * FR_QSTEP_PAR_MIN_BYTES) or by whole panels of every gate's units (a large
 * enough step product that converts in one chunk), else one. */
typedef struct {
    int nth;
    int by_rows;
} fr_qteam;

static fr_qteam fr_qstep_team(const fr_qlayer *L, const fr_shape *s, int n_threads)
{
    const int64_t B = s->batch, H = s->hidden, G = fr_gates(s->cell);
    const int64_t bytes = G * H * H * fr_qelem(L->W_hh.kind);
    const int n = fr_threads(n_threads);
    fr_qteam team = {1, 0};
    if (n < 2) return team;
    if (bytes < FR_QSTEP_PAR_MIN_BYTES) {
        if (fr_row_split_enabled() && B / FR_QROW_BLOCK > 1 &&
            B * s->steps * G * H * H >= FR_QROW_MIN_MACS) {
            const int64_t most = fr_qrow_team_max(B);
            team.nth = n < most ? n : (int)most;
            team.by_rows = 1;
        }
        return team;
    }
    if (H % FR_Q_PANEL || B > FR_Q_CHUNK || L->W_hh.kind == FR_Q_F32 ||
        B * G * H * H < FR_QSTEP_PAR_MIN_MACS)
        return team;
    team.nth = n < H / FR_Q_PANEL ? n : (int)(H / FR_Q_PANEL);
    return team;
}

int fr_qstep_team_of(const fr_qlayer *L, const fr_shape *s, int n_threads, int *by_rows)
{
    if (!L || fr_check_shape(s, s ? s->hidden : 0) != FR_OK || !fr_qgroup(L->W_hh.kind))
        return -1;
    const fr_qteam team = fr_qstep_team(L, s, n_threads);
    if (by_rows) *by_rows = team.by_rows;
    return team.nth;
}

/* Steps in time order (reversed for the backward direction); a sample's state
 * waits at h0 until its reverse pass starts and stays at its last valid step's
 * after its forward pass ends. */
static int fr_qsteps(const fr_qlayer *L, const fr_shape *s, const fr_qforward_ws *w, float *Y,
                     int64_t ldy, int n_threads)
{
    const int64_t T = s->steps, H = s->hidden, GH = fr_gates(s->cell) * H;
    const fr_qteam team = fr_qstep_team(L, s, n_threads);
    if (team.by_rows) return fr_qsteps_by_rows(L, s, w, Y, ldy, team.nth);
    if (team.nth > 1) return fr_qsteps_team(L, s, w, Y, ldy, team.nth);
    for (int64_t step = 0; step < T; step++) {
        if (fr_should_stop()) return FR_STOPPED;
        const int64_t t = s->reverse ? T - 1 - step : step;
        const int64_t n = fr_qactive(s, w, t);
        fr_qgemm_rows(&L->W_hh, n, w->h, H, w->order, w->gh, GH, 0, w->scratch, n_threads);
        fr_qcells(L, s, w, t, 0, s->batch, n, 0, H, w->pre, Y, ldy);
    }
    return FR_OK;
}

/* W_ih's product of every valid step (all B * T without lengths): a ragged
 * batch lists its valid rows once and projects them in one product. */
static void fr_qproject(const fr_qlayer *L, const fr_shape *s, const float *X,
                        const fr_qforward_ws *w, int n_threads)
{
    const int64_t B = s->batch, T = s->steps, GH = fr_gates(s->cell) * s->hidden;
    int64_t rows = B * T;
    if (s->lengths) {
        rows = 0;
        for (int64_t b = 0; b < B; b++) {
            w->first[b] = rows;
            for (int64_t t = 0; t < fr_qlength(s, b); t++) w->valid[rows++] = b * T + t;
        }
    }
    fr_qgemm_rows(&L->W_ih, rows, X, s->inputs, w->valid, w->gates, GH, 0, w->scratch, n_threads);
}

int fr_qforward(const fr_qlayer *L, const fr_shape *s, const float *X, const float *h0,
                const float *c0, float *Y, int64_t ldy, float *hN, float *cN, void *ws,
                int n_threads)
{
    int rc = fr_check_shape(s, ldy);
    if (rc != FR_OK) return rc;
    const int lstm = s->cell == FR_LSTM;
    const int64_t B = s->batch, H = s->hidden, GH = fr_gates(s->cell) * H;
    if (!L || !X || !Y || !hN || !ws || !L->b_ih || !L->b_hh || (lstm && !cN)) return FR_ERR_ARG;
    if ((rc = fr_qweight_check(&L->W_ih)) != FR_OK || (rc = fr_qweight_check(&L->W_hh)) != FR_OK)
        return rc;
    if (L->W_ih.rows != GH || L->W_ih.cols != s->inputs || L->W_hh.rows != GH ||
        L->W_hh.cols != H)
        return FR_ERR_ARG;
    fr_qforward_ws w;
    fr_qpoint_ws(L, s, ws, &w);
    if (w.order) fr_order_by_length(s, w.order, w.order + B);
    for (int64_t j = 0; j < GH; j++) w.bias[j] = L->b_ih[j] + L->b_hh[j];
    if (h0) memcpy(w.h, h0, (size_t)(B * H) * sizeof(float));
    else memset(w.h, 0, (size_t)(B * H) * sizeof(float));
    if (lstm && c0) memcpy(w.c, c0, (size_t)(B * H) * sizeof(float));
    else if (lstm) memset(w.c, 0, (size_t)(B * H) * sizeof(float));
    fr_qproject(L, s, X, &w, n_threads);
    rc = fr_qsteps(L, s, &w, Y, ldy, n_threads);
    if (rc != FR_OK) return rc;
    memcpy(hN, w.h, (size_t)(B * H) * sizeof(float));
    if (lstm) memcpy(cN, w.c, (size_t)(B * H) * sizeof(float));
    return FR_OK;
}

/* ----- generation ----------------------------------------------------------------------- */

/* Layer 0's input projection of every vocabulary token, once per call, when
 * the call feeds at least as many tokens as the vocabulary holds (one product
 * of vocab rows instead of one per step) and the table stays small. */
#define FR_QTABLE_MAX_BYTES (32 << 20)

/* The call's buffers, carved from one allocation (fr_qgen_sizes). */
enum { FR_QG_H, FR_QG_C, FR_QG_GATES, FR_QG_GH, FR_QG_X, FR_QG_BIAS, FR_QG_PRE, FR_QG_HEAD,
       FR_QG_TABLE, FR_QG_SCRATCH, FR_QG_RNGS, FR_QG_PROBS, FR_QG_LOGITS, FR_QG_TOKEN,
       FR_QG_REGIONS };

typedef struct {
    float *h, *c;       /* (L, n, H) every layer's state, updated in place */
    float *gates, *gh;  /* (n, G*H) one layer's W_ih and W_hh products */
    float *x;           /* (n, E) the embedded tokens (no table) */
    float *bias;        /* (L, G*H) b_ih + b_hh */
    float *pre;         /* (G*H) the cell's activations */
    float *head;        /* (n, n_outputs) */
    float *table;       /* (vocab, G*H) or NULL */
    void *scratch;      /* fr_qgemm's */
    fr_rng *rngs;       /* n */
    fr_prob *probs;     /* V */
    double *logits;     /* V */
    int32_t *token;     /* n: the tokens just sampled */
} fr_qgen_buffers;

static int fr_qgen_table(const fr_qgenerator *g, int64_t n, int64_t n_prompt, int64_t n_new)
{
    const int64_t GH = fr_gates(g->cell) * g->hidden;
    return g->vocab <= n * (n_prompt - 1 + n_new) &&
           g->vocab * GH * (int64_t)sizeof(float) <= FR_QTABLE_MAX_BYTES;
}

static int64_t fr_qgen_scratch(const fr_qgenerator *g, int64_t n, int table)
{
    int64_t most = fr_qgemm_scratch(&g->W_ih[0], table ? g->vocab : n);
    const int64_t head = fr_qgemm_scratch(&g->head_W, n);
    most = head > most ? head : most;
    for (int64_t l = 0; l < g->num_layers; l++) {
        const int64_t ih = fr_qgemm_scratch(&g->W_ih[l], n), hh = fr_qgemm_scratch(&g->W_hh[l], n);
        most = ih > most ? ih : most;
        most = hh > most ? hh : most;
    }
    return most;
}

static void fr_qgen_sizes(const fr_qgenerator *g, int64_t n, int table, int64_t *sizes)
{
    const int64_t L = g->num_layers, H = g->hidden, GH = fr_gates(g->cell) * H, f = sizeof(float);
    const int64_t V = g->n_outputs > 1 ? g->n_outputs : 2;
    sizes[FR_QG_H] = L * n * H * f;
    sizes[FR_QG_C] = L * n * H * f;
    sizes[FR_QG_GATES] = n * GH * f;
    sizes[FR_QG_GH] = n * GH * f;
    sizes[FR_QG_X] = n * g->embed_dim * f;
    sizes[FR_QG_BIAS] = L * GH * f;
    sizes[FR_QG_PRE] = GH * f;
    sizes[FR_QG_HEAD] = n * g->n_outputs * f;
    sizes[FR_QG_TABLE] = table ? g->vocab * GH * f : 0;
    sizes[FR_QG_SCRATCH] = fr_qgen_scratch(g, n, table);
    sizes[FR_QG_RNGS] = n * (int64_t)sizeof(fr_rng);
    sizes[FR_QG_PROBS] = V * (int64_t)sizeof(fr_prob);
    sizes[FR_QG_LOGITS] = V * (int64_t)sizeof(double);
    sizes[FR_QG_TOKEN] = n * (int64_t)sizeof(int32_t);
    for (int i = 0; i < FR_QG_REGIONS; i++) sizes[i] = fr_qpadded(sizes[i], 64);
}

/* One allocation carved into b (regions 64-byte multiples); NULL when out of memory. */
static void *fr_qgen_alloc(const fr_qgenerator *g, int64_t n, int table, fr_qgen_buffers *b)
{
    int64_t sizes[FR_QG_REGIONS], total = 0;
    fr_qgen_sizes(g, n, table, sizes);
    for (int i = 0; i < FR_QG_REGIONS; i++) total += sizes[i];
    char *mem = (char *)malloc((size_t)total), *at = mem;
    if (!mem) return NULL;
    void **regions[FR_QG_REGIONS] = {
        (void **)&b->h, (void **)&b->c, (void **)&b->gates, (void **)&b->gh, (void **)&b->x,
        (void **)&b->bias, (void **)&b->pre, (void **)&b->head, (void **)&b->table, &b->scratch,
        (void **)&b->rngs, (void **)&b->probs, (void **)&b->logits, (void **)&b->token};
    for (int i = 0; i < FR_QG_REGIONS; i++) {
        *regions[i] = sizes[i] ? at : NULL;
        at += sizes[i];
    }
    return mem;
}

static int fr_qgen_check(const fr_qgenerator *g, const fr_sampling *opt, int64_t n,
                         const int32_t *prompt, int64_t n_prompt, int64_t n_new,
                         const int32_t *out)
{
    if (!g || !opt || !out || n < 1 || n_new < 0 || n_prompt < 1 || !prompt || !g->out_tokens ||
        !g->embedding || !g->W_ih || !g->W_hh || !g->b_ih || !g->b_hh || !g->head_b ||
        fr_gates(g->cell) == 0 || g->num_layers < 1 || g->hidden < 1 || g->embed_dim < 1 ||
        g->vocab < 1 || g->n_outputs < 1)
        return FR_ERR_ARG;
    const int64_t H = g->hidden, GH = fr_gates(g->cell) * H;
    int rc = fr_qweight_check(&g->head_W);
    if (rc != FR_OK || g->head_W.rows != g->n_outputs || g->head_W.cols != H) return FR_ERR_ARG;
    for (int64_t l = 0; l < g->num_layers; l++) {
        if ((rc = fr_qweight_check(&g->W_ih[l])) != FR_OK ||
            (rc = fr_qweight_check(&g->W_hh[l])) != FR_OK || !g->b_ih[l] || !g->b_hh[l])
            return FR_ERR_ARG;
        if (g->W_ih[l].rows != GH || g->W_ih[l].cols != (l ? H : g->embed_dim) ||
            g->W_hh[l].rows != GH || g->W_hh[l].cols != H)
            return FR_ERR_ARG;
    }
    for (int64_t i = 0; i < n * n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= g->vocab) return FR_ERR_ARG;
    for (int64_t o = 0; o < (g->n_outputs > 1 ? g->n_outputs : 2); o++)
        if (g->out_tokens[o] < 0 || g->out_tokens[o] >= g->vocab) return FR_ERR_ARG;
    return FR_OK;
}

/* One call: the model, its sampling and its buffers. */
typedef struct {
    const fr_qgenerator *g;
    const fr_sampling *opt;
    int64_t n, n_prompt, n_new;
    const int32_t *prompt;
    int32_t *out;
    float *logits_out;
    fr_qgen_buffers b;
    int n_threads;
} fr_qgen_call;

static void fr_qgen_init(fr_qgen_call *gc, const float *h0, const float *c0)
{
    const fr_qgenerator *g = gc->g;
    const int64_t L = g->num_layers, GH = fr_gates(g->cell) * g->hidden;
    const size_t state = (size_t)(L * gc->n * g->hidden) * sizeof(float);
    for (int64_t i = 0; i < gc->n; i++) fr_rng_seed(&gc->b.rngs[i], gc->opt->seed, (uint64_t)i);
    if (h0) memcpy(gc->b.h, h0, state);
    else memset(gc->b.h, 0, state);
    if (c0) memcpy(gc->b.c, c0, state);
    else memset(gc->b.c, 0, state);
    for (int64_t l = 0; l < L; l++)
        for (int64_t j = 0; j < GH; j++) gc->b.bias[l * GH + j] = g->b_ih[l][j] + g->b_hh[l][j];
    if (gc->b.table) /* the same per-row products as a step's */
        fr_qgemm(&g->W_ih[0], g->vocab, g->embedding, g->embed_dim, gc->b.table, GH, 0,
                 gc->b.scratch, gc->n_threads);
}

/* Sample i's input token at this step (prompt, then sampled). */
static int64_t fr_qgen_token(const fr_qgen_call *gc, int64_t step, int64_t i)
{
    return step < gc->n_prompt ? gc->prompt[i * gc->n_prompt + step] : gc->b.token[i];
}

/* Layer 0's W_ih products of the step's tokens: table rows or one product. */
static void fr_qgen_input(const fr_qgen_call *gc, int64_t step)
{
    const fr_qgenerator *g = gc->g;
    const int64_t E = g->embed_dim, GH = fr_gates(g->cell) * g->hidden;
    for (int64_t i = 0; i < gc->n; i++) {
        const int64_t tok = fr_qgen_token(gc, step, i);
        if (gc->b.table)
            memcpy(gc->b.gates + i * GH, gc->b.table + tok * GH, (size_t)GH * sizeof(float));
        else
            memcpy(gc->b.x + i * E, g->embedding + tok * E, (size_t)E * sizeof(float));
    }
    if (!gc->b.table)
        fr_qgemm(&g->W_ih[0], gc->n, gc->b.x, E, gc->b.gates, GH, 0, gc->b.scratch,
                 gc->n_threads);
}

/* Every layer's step (layer 0's W_ih product already in gates). */
static void fr_qgen_layers(const fr_qgen_call *gc)
{
    const fr_qgenerator *g = gc->g;
    const int64_t n = gc->n, H = g->hidden, GH = fr_gates(g->cell) * H;
    for (int64_t l = 0; l < g->num_layers; l++) {
        float *h = gc->b.h + l * n * H, *c = gc->b.c + l * n * H;
        if (l) fr_qgemm(&g->W_ih[l], n, h - n * H, H, gc->b.gates, GH, 0, gc->b.scratch,
                        gc->n_threads);
        fr_qgemm(&g->W_hh[l], n, h, H, gc->b.gh, GH, 0, gc->b.scratch, gc->n_threads);
        for (int64_t i = 0; i < n; i++)
            fr_qcell(g->cell, H, H, gc->b.gates + i * GH, gc->b.gh + i * GH, gc->b.bias + l * GH,
                     g->b_ih[l], g->b_hh[l], gc->b.pre, h + i * H, c + i * H, NULL);
    }
}

/* The head on the top layer's state, then every sample's next token. */
static void fr_qgen_sample(const fr_qgen_call *gc, int64_t step)
{
    const fr_qgenerator *g = gc->g;
    const int64_t n = gc->n, H = g->hidden, n_out = g->n_outputs;
    const int64_t t = step - (gc->n_prompt - 1);
    fr_qgemm(&g->head_W, n, gc->b.h + (g->num_layers - 1) * n * H, H, gc->b.head, n_out, 0,
             gc->b.scratch, gc->n_threads);
    for (int64_t i = 0; i < n; i++) {
        const float *z = gc->b.head + i * n_out;
        const int64_t o = fr_draw_f32(z, g->head_b, n_out, gc->opt, &gc->b.rngs[i], gc->b.probs,
                                      gc->b.logits);
        gc->b.token[i] = g->out_tokens[o];
        gc->out[i * gc->n_new + t] = gc->b.token[i];
        if (gc->logits_out) {
            float *dst = gc->logits_out + (i * gc->n_new + t) * n_out;
            for (int64_t v = 0; v < n_out; v++) dst[v] = z[v] + g->head_b[v];
        }
    }
}

int fr_qgenerate(const fr_qgenerator *g, const fr_sampling *opt, int64_t n,
                 const int32_t *prompt, int64_t n_prompt, const float *h0, const float *c0,
                 int64_t n_new, int32_t *out, float *logits, int n_threads)
{
    int rc = fr_qgen_check(g, opt, n, prompt, n_prompt, n_new, out);
    if (rc != FR_OK) return rc;
    fr_qgen_call gc = {g, opt, n, n_prompt, n_new, prompt, out, logits};
    gc.n_threads = n_threads;
    void *mem = fr_qgen_alloc(g, n, fr_qgen_table(g, n, n_prompt, n_new), &gc.b);
    if (!mem) return FR_ERR_NOMEM;
    fr_qgen_init(&gc, h0, c0);
    for (int64_t step = 0; step < n_prompt - 1 + n_new; step++) {
        if (fr_should_stop()) {
            rc = FR_STOPPED;
            break;
        }
        fr_qgen_input(&gc, step);
        fr_qgen_layers(&gc);
        if (step >= n_prompt - 1) fr_qgen_sample(&gc, step);
    }
    free(mem);
    return rc;
}
