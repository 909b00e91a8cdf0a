/* tap.h: a tiny TAP harness for the C unit tests (one binary per module, run by CTest). */
#ifndef SLUICE_TAP_H
#define SLUICE_TAP_H

#include <stdio.h>
#include <string.h>

static int tap_n, tap_failed;

#define ok(cond, ...)                                                        \
    do {                                                                     \
        int ok_ = !!(cond);                                                  \
        tap_n++;                                                             \
        if (!ok_) tap_failed++;                                              \
        printf("%s %d - ", ok_ ? "ok" : "not ok", tap_n);                    \
        printf(__VA_ARGS__);                                                 \
        printf("\n");                                                        \
        if (!ok_) printf("#   failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
    } while (0)

#define is_int(got, want, name)                                              \
    do {                                                                     \
        long long g_ = (long long)(got), w_ = (long long)(want);             \
        ok(g_ == w_, "%s", name);                                            \
        if (g_ != w_) printf("#   got %lld, want %lld\n", g_, w_);           \
    } while (0)

#define is_str(got, want, name)                                              \
    do {                                                                     \
        const char *g_ = (got), *w_ = (want);                                \
        int e_ = (g_ && w_) ? strcmp(g_, w_) == 0 : g_ == w_;                \
        ok(e_, "%s", name);                                                  \
        if (!e_) printf("#   got \"%s\", want \"%s\"\n", g_ ? g_ : "(null)", w_ ? w_ : "(null)"); \
    } while (0)

/* Call last in main(): prints the plan and returns the exit status. */
static inline int tap_done(void)
{
    printf("1..%d\n", tap_n);
    if (tap_failed) printf("# %d of %d failed\n", tap_failed, tap_n);
    return tap_failed ? 1 : 0;
}

#endif
