/* Internal to the C kernels (not part of fastrnn.h's API): one function body
 * compiled for several instruction sets, the best one picked at run time.
 *
 *     FR_DISPATCHED(void, name, (int64_t n, float *y), (n, y))
 *     {
 *         ... the body, written once ...
 *     }
 *
 * defines `static void name(int64_t n, float *y)`, which runs the body
 * compiled for AVX-512F, for AVX2 with FMA, or for the baseline, by
 * fr_isa_level(). Why not GCC's target_clones: its clones are named by one
 * feature each, and neither fits AVX2 CPUs. An "fma" clone has no AVX2, so
 * the exp's integer steps (and the int8 kernels' integer sums) ran 128 bits
 * wide; an "avx2" clone has no FMA, so fmaf became a libm call; and gcc 12's
 * resolver ran the default clone, not an "arch=x86-64-v3" one, on a Zen 3
 * (AVX2, FMA). The body is an always_inline function, inlined into one
 * wrapper per target. Elsewhere (not GCC on x86-64 Linux) it is a plain
 * static function. */
#ifndef FASTRNN_DISPATCH_H
#define FASTRNN_DISPATCH_H

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define FR_ISA_DISPATCH 1
#else
#define FR_ISA_DISPATCH 0
#endif

#include "fastrnn.h" /* fr_isa_level, fr_set_isa_cap */

/* fr_isa_level(): FR_ISA_AVX512 where the CPU has AVX-512F, FR_ISA_AVX2
 * where it has AVX2 and FMA, else FR_ISA_BASE (always FR_ISA_BASE without
 * FR_ISA_DISPATCH), within the cap fr_set_isa_cap sets. */
enum { FR_ISA_BASE = 0, FR_ISA_AVX2 = 1, FR_ISA_AVX512 = 2 };

/* An extra level, so that a name given as FR_(x) is expanded before ## */
#define FR_DISPATCHED(ret, name, params, args) FR_DISPATCHED_(ret, name, params, args)
#if FR_ISA_DISPATCH
#define FR_DISPATCHED_(ret, name, params, args)                                               \
    static inline __attribute__((always_inline)) ret name##_body params;                      \
    __attribute__((target("avx512f"))) static ret name##_avx512 params                        \
    {                                                                                         \
        return name##_body args;                                                              \
    }                                                                                         \
    __attribute__((target("avx2,fma"))) static ret name##_avx2 params                         \
    {                                                                                         \
        return name##_body args;                                                              \
    }                                                                                         \
    static ret name##_base params { return name##_body args; }                                \
    static ret name params                                                                    \
    {                                                                                         \
        const int isa = fr_isa_level();                                                       \
        return isa == FR_ISA_AVX512 ? name##_avx512 args                                      \
             : isa == FR_ISA_AVX2   ? name##_avx2 args                                        \
                                    : name##_base args;                                       \
    }                                                                                         \
    static inline __attribute__((always_inline)) ret name##_body params
#else
#define FR_DISPATCHED_(ret, name, params, args) static ret name params
#endif

#endif
