/* dashboard.h: the admin dashboard page (HTML + JS polling /_sluice/status), embedded. */
#ifndef SLUICE_DASHBOARD_H
#define SLUICE_DASHBOARD_H

#include <stddef.h>

extern const char dashboard_html[];
extern const size_t dashboard_html_len;

#endif
