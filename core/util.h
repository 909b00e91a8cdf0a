/* util.h: the few macros every layer uses (layer L0; no functions, no state). */
#ifndef SLUICE_UTIL_H
#define SLUICE_UTIL_H

#include <stddef.h>

/* The struct T whose member m is at p: callbacks get the embedded watcher, we want its owner. */
#define container_of(p, T, m) ((T *)((char *)(p) - offsetof(T, m)))

/* Elements of a fixed-size array. */
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
