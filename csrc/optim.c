/* Fused optimizer updates over one flat parameter buffer, float and double. */
#include "fastrnn.h"

#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Below this many parameters one thread is faster than an OpenMP fork. */
#define FR_OPTIM_PAR_MIN 65536

#define real float
#define FR_(name) name##_f32
#define FR_SQRT sqrtf
#include "optim_impl.h"
#undef real
#undef FR_
#undef FR_SQRT

#define real double
#define FR_(name) name##_f64
#define FR_SQRT sqrt
#include "optim_impl.h"
#undef real
#undef FR_
#undef FR_SQRT
