/* timerwheel.h: a hierarchical timer wheel (one per worker, not thread-safe) for request/idle timeouts and SSE heartbeats. */
#ifndef SLUICE_TIMERWHEEL_H
#define SLUICE_TIMERWHEEL_H

#include <stddef.h>
#include <stdint.h>

/*
 * Times are uint64_t milliseconds of a clock the caller supplies (libev loop
 * time, or a test's virtual clock); the wheel never reads a clock itself.
 *
 * Layout: 11 levels x 64 slots, 1 ms resolution. Level L holds entries whose
 * deadline first differs from the wheel's time in bits 6L..6L+5, so the wheel
 * covers the whole uint64_t range with no overflow list. Insert and cancel
 * are O(1). A run cascades an entry at most once per level over its life, so
 * a run costs O(levels + entries fired or cascaded), never O(elapsed ms):
 * jumping the clock forward by years is as cheap as by one millisecond.
 *
 * Precision: an entry fires in the first timerwheel_run() whose now_ms >= at,
 * never earlier and never later (there is no tick rounding). Within one run,
 * entries fire in non-decreasing order of `at` (overdue entries added with
 * at <= the wheel's time fire first).
 *
 * Memory: about 17 KB per wheel; entries are embedded in their owner's struct
 * (recover the owner with container_of), so adding a timer never allocates.
 */

typedef struct timerwheel timerwheel;
typedef struct tw_entry tw_entry;
typedef void (*tw_cb)(tw_entry *e);

/* Public only so it can be embedded; touch the fields through the functions
 * below (reading `at` is fine). next == NULL means "not linked". */
struct tw_entry {
    tw_entry *next, *prev;
    uint64_t at;       /* absolute deadline, ms */
    tw_cb cb;
    timerwheel *tw;    /* wheel it is linked in, so cancel can keep the count */
};

/* Creates a wheel whose current time is now_ms. NULL on out-of-memory. */
timerwheel *timerwheel_new(uint64_t now_ms);

/* Frees the wheel. Entries still linked are unlinked (not fired), so a later
 * tw_entry_cancel() on them is a harmless no-op. Not from inside a callback. */
void timerwheel_free(timerwheel *tw);

/* Initialises an unlinked entry with its callback; call once before first use. */
void tw_entry_init(tw_entry *e, tw_cb cb);

/* Arms e to fire at at_ms. Re-adding a linked entry moves it (also from one
 * wheel to another). at_ms <= the wheel's time fires at the next run (not the
 * current one, when called from a callback: a self re-arm cannot loop). */
void timerwheel_add(timerwheel *tw, tw_entry *e, uint64_t at_ms);

/* Disarms e in O(1); a no-op when e is not linked. Safe from any callback. */
void tw_entry_cancel(tw_entry *e);

/* Non-zero when e is armed (it is unlinked just before its callback runs). */
int tw_entry_linked(const tw_entry *e);

/* Advances the wheel to now_ms and fires every entry with at <= now_ms;
 * returns how many fired. A callback may add or cancel any entry, including
 * itself; an entry added with at in (fire time, now_ms] fires in this same run.
 * Not re-entrant: do not call timerwheel_run or timerwheel_free from a callback.
 * A now_ms older than the wheel's time only fires overdue entries. */
size_t timerwheel_run(timerwheel *tw, uint64_t now_ms);

/* A time <= the earliest deadline (absolute ms), suitable for arming one
 * ev_timer; UINT64_MAX when empty. Exact unless entries were cancelled or
 * moved since their slot was last visited (then possibly earlier, which only
 * costs a spurious wake-up). O(levels). now_ms is accepted for symmetry with
 * timerwheel_run and does not change the result. */
uint64_t timerwheel_next(const timerwheel *tw, uint64_t now_ms);

/* Number of linked entries. */
size_t timerwheel_count(const timerwheel *tw);

/* The wheel's current time: the last now_ms given to timerwheel_run (or
 * timerwheel_new); inside a callback, the deadline being fired. */
uint64_t timerwheel_now(const timerwheel *tw);

#endif
