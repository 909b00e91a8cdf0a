/* dashboard.h: the admin dashboard page, core/dashboard.html, embedded at build time (tools/embed_file.cmake). */
#ifndef SLUICE_DASHBOARD_H
#define SLUICE_DASHBOARD_H

#include <stddef.h>

extern const char dashboard_html[];     /* NUL-terminated */
extern const size_t dashboard_html_len; /* without the NUL */

#endif
