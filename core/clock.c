/* clock.c: the clocks (see clock.h). */
#include "clock.h"

#include <string.h>
#include <time.h>

uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void worker_update_date(worker *w)
{
    long t = (long)ev_now(w->loop);
    if (t != w->date_t) {
        w->date_t = t;
        http_date(t, w->date);
    }
}

void http_date(long t, char out[30])
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char mons[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    time_t tt = (time_t)t;
    gmtime_r(&tt, &tm);
    strftime(out, 30, "---, %d --- %Y %H:%M:%S GMT", &tm);   /* C locale digits; names below */
    memcpy(out, days[tm.tm_wday % 7], 3);
    memcpy(out + 8, mons[tm.tm_mon % 12], 3);
}
