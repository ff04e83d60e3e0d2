/* Fused optimizer updates for one precision. Included by optim.c with `real`,
 * FR_() and FR_SQRT defined; no include guard on purpose. */

double FR_(fr_sumsq)(const real *x, int64_t n, int n_threads)
{
    double total = 0;
    const int nth = fr_threads(n_threads);
    (void)nth; /* only read by OpenMP pragmas */
#pragma omp parallel for reduction(+:total) num_threads(nth) schedule(static) if (nth > 1 && n >= FR_OPTIM_PAR_MIN)
    for (int64_t i = 0; i < n; i++) total += (double)x[i] * (double)x[i];
    return total;
}

int FR_(fr_optim_step)(const fr_optim *o, int64_t n, real *w, const real *g, real *m,
                           real *v, const real *mask, int n_threads)
{
    if (!o || !w || !g || n < 0) return FR_ERR_ARG;
    const real lr = (real)o->lr, l2 = (real)o->l2, gs = (real)o->grad_scale;
    const real eps = (real)o->eps;
    const int nth = fr_threads(n_threads);
    (void)nth; /* only read by OpenMP pragmas */
    switch (o->solver) {
    case FR_SGD: {
        if (o->momentum != 0 && !m) return FR_ERR_ARG;
        const real mu = (real)o->momentum;
        const int nesterov = o->nesterov;
#pragma omp parallel for num_threads(nth) schedule(static) if (nth > 1 && n >= FR_OPTIM_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            real gi = gs * g[i] + l2 * (mask ? mask[i] : 1) * w[i];
            if (mu == 0) { w[i] -= lr * gi; continue; }
            real vel = mu * m[i] - lr * gi;
            m[i] = vel;
            w[i] += nesterov ? mu * vel - lr * gi : vel;
        }
        return FR_OK;
    }
    case FR_RMSPROP:
    case FR_ADAGRAD: {
        if (!v) return FR_ERR_ARG;
        const real rho = o->solver == FR_ADAGRAD ? 1 : (real)o->rho;
        const real one_minus = o->solver == FR_ADAGRAD ? 1 : 1 - rho;
#pragma omp parallel for num_threads(nth) schedule(static) if (nth > 1 && n >= FR_OPTIM_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            real gi = gs * g[i] + l2 * (mask ? mask[i] : 1) * w[i];
            real vi = rho * v[i] + one_minus * gi * gi;
            v[i] = vi;
            w[i] -= lr * gi / (FR_SQRT(vi) + eps);
        }
        return FR_OK;
    }
    case FR_ADAM: {
        if (!m || !v || o->step < 1) return FR_ERR_ARG;
        const real b1 = (real)o->beta1, b2 = (real)o->beta2;
        const real lr_t = (real)(o->lr * sqrt(1 - pow(o->beta2, (double)o->step)) /
                                 (1 - pow(o->beta1, (double)o->step)));
#pragma omp parallel for num_threads(nth) schedule(static) if (nth > 1 && n >= FR_OPTIM_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            real gi = gs * g[i] + l2 * (mask ? mask[i] : 1) * w[i];
            real mi = b1 * m[i] + (1 - b1) * gi;
            real vi = b2 * v[i] + (1 - b2) * gi * gi;
            m[i] = mi;
            v[i] = vi;
            w[i] -= lr_t * mi / (FR_SQRT(vi) + eps);
        }
        return FR_OK;
    }
    default:
        return FR_ERR_ARG;
    }
}
