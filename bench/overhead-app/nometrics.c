/* nometrics.c: a benchmark-only "metrics off" sluice. bench/overhead.sh relinks the normal
 * build's objects with this file and -Wl,--wrap=metrics_observe, so dispatch's per-request
 * call lands here and records nothing. core/ stays untouched; what is left of the metrics
 * cost in that build (the one clock read before the call) is measured with callgrind. */
#include <stdint.h>

struct worker;
void __wrap_metrics_observe(struct worker *w, unsigned route, unsigned method, int status, uint64_t us, uint64_t now);

void __wrap_metrics_observe(struct worker *w, unsigned route, unsigned method, int status, uint64_t us, uint64_t now)
{
    (void)w, (void)route, (void)method, (void)status, (void)us, (void)now;
}
