/* phist.c: fixed-bound Prometheus histograms; see phist.h. */
#include "phist.h"

#include <string.h>

void phist_bounds_init(phist_bounds *b, const double *le_s, int n)
{
    if (n > PHIST_MAX) n = PHIST_MAX;
    if (n < 0) n = 0;
    memset(b, 0, sizeof *b);
    b->n = n;
    for (int i = 0; i < n; i++) {
        b->le_s[i] = le_s[i];
        double us = le_s[i] * 1e6 + 0.5;          /* 0.0005 s is 500 us, not 499.99 */
        b->le_us[i] = us > 0 ? (uint64_t)us : 0;
    }
    for (int k = 0; k < 64; k++) {
        uint64_t lo = (uint64_t)1 << k;
        int i = 0;
        while (i < n && b->le_us[i] < lo) i++;
        b->first[k] = (uint8_t)i;
    }
}

void phist_merge(phist *dst, const phist *src)
{
    for (int i = 0; i <= PHIST_MAX; i++) dst->bucket[i] += __atomic_load_n(&src->bucket[i], __ATOMIC_RELAXED);
    dst->sum_us += __atomic_load_n(&src->sum_us, __ATOMIC_RELAXED);
}

uint64_t phist_count(const phist *h, const phist_bounds *b)
{
    uint64_t n = 0;
    for (int i = 0; i <= b->n; i++) n += __atomic_load_n(&h->bucket[i], __ATOMIC_RELAXED);
    return n;
}

void phist_render(buf *out, const char *name, const char *labels, const phist *h, const phist_bounds *b)
{
    const char *sep = labels[0] ? "," : "";
    uint64_t cum = 0;
    for (int i = 0; i < b->n; i++) {
        cum += __atomic_load_n(&h->bucket[i], __ATOMIC_RELAXED);
        buf_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, b->le_s[i], (unsigned long long)cum);
    }
    cum += __atomic_load_n(&h->bucket[b->n], __ATOMIC_RELAXED);
    buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)cum);
    const char *lb = labels[0] ? "{" : "", *rb = labels[0] ? "}" : "";
    buf_printf(out, "%s_sum%s%s%s %.6f\n", name, lb, labels, rb, (double)__atomic_load_n(&h->sum_us, __ATOMIC_RELAXED) / 1e6);
    buf_printf(out, "%s_count%s%s%s %llu\n", name, lb, labels, rb, (unsigned long long)cum);
}
