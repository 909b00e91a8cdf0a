/* timerwheel.c: hierarchical timer wheel; see timerwheel.h for the contract. */
#include "timerwheel.h"

#include <stdlib.h>

#define TW_BITS 6
#define TW_SLOTS (1u << TW_BITS)                 /* 64 */
#define TW_LEVELS ((64 + TW_BITS - 1) / TW_BITS) /* 11: covers all 64 bits */

/*
 * Invariant (between calls): every linked entry with at > tw->now sits in
 * level L = hibit(at ^ now) / 6, slot s = digit L of at. Its digit at that
 * level is then > now's digit and all higher digits are equal, so each slot
 * covers [lower(L, s), lower(L, s) + 64^L) and no slot ever wraps around.
 * Advancing now to t keeps the invariant for every slot whose lower bound is
 * still > t; the slots with lower bound <= t are emptied and their entries
 * re-inserted (cascade) or fired. Entries with at <= now live in `overdue`.
 *
 * Cancel only unlinks (it does not know the slot), so an occupancy bit or a
 * slot_min may be stale: bits are cleared when an empty slot is met, and a
 * stale slot_min is still a lower bound of the slot's deadlines.
 */
struct timerwheel {
    uint64_t now;
    size_t count;
    uint64_t occupied[TW_LEVELS];                /* bit s: slot s may hold entries */
    uint64_t slot_min[TW_LEVELS][TW_SLOTS];      /* lower bound of the slot's deadlines */
    tw_entry slot[TW_LEVELS][TW_SLOTS];          /* circular lists, sentinel heads */
    tw_entry overdue;                            /* at <= now; fired first by the next run */
    uint64_t overdue_min;
};

static void list_init(tw_entry *h) { h->next = h->prev = h; }

static int list_empty(const tw_entry *h) { return h->next == h; }

static void list_append(tw_entry *h, tw_entry *e)
{
    e->prev = h->prev;
    e->next = h;
    h->prev->next = e;
    h->prev = e;
}

static void list_unlink(tw_entry *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->next = e->prev = NULL;
}

/* Moves all of src to the tail of dst, leaving src empty. */
static void list_splice(tw_entry *dst, tw_entry *src)
{
    if (list_empty(src)) return;
    src->next->prev = dst->prev;
    dst->prev->next = src->next;
    src->prev->next = dst;
    dst->prev = src->prev;
    list_init(src);
}

/* now with the bits below level L+1 cleared: the base every level-L slot is relative to. */
static uint64_t level_base(uint64_t now, unsigned L)
{
    unsigned b = TW_BITS * (L + 1);
    return b >= 64 ? 0 : now & ~((UINT64_C(1) << b) - 1);
}

static unsigned digit(uint64_t t, unsigned L) { return (unsigned)(t >> (TW_BITS * L)) & (TW_SLOTS - 1); }

/* Places e (at > tw->now) in its slot. */
static void wheel_insert(timerwheel *tw, tw_entry *e)
{
    unsigned L = (unsigned)(63 - __builtin_clzll(e->at ^ tw->now)) / TW_BITS;
    unsigned s = digit(e->at, L);
    list_append(&tw->slot[L][s], e);
    tw->occupied[L] |= UINT64_C(1) << s;
    if (e->at < tw->slot_min[L][s]) tw->slot_min[L][s] = e->at;
}

timerwheel *timerwheel_new(uint64_t now_ms)
{
    timerwheel *tw = malloc(sizeof *tw);
    if (!tw) return NULL;
    tw->now = now_ms;
    tw->count = 0;
    for (unsigned L = 0; L < TW_LEVELS; L++) {
        tw->occupied[L] = 0;
        for (unsigned s = 0; s < TW_SLOTS; s++) {
            list_init(&tw->slot[L][s]);
            tw->slot_min[L][s] = UINT64_MAX;
        }
    }
    list_init(&tw->overdue);
    tw->overdue_min = UINT64_MAX;
    return tw;
}

static void forget_list(tw_entry *h)
{
    while (!list_empty(h)) {
        tw_entry *e = h->next;
        list_unlink(e);
        e->tw = NULL;
    }
}

void timerwheel_free(timerwheel *tw)
{
    if (!tw) return;
    for (unsigned L = 0; L < TW_LEVELS; L++)
        for (unsigned s = 0; s < TW_SLOTS; s++) forget_list(&tw->slot[L][s]);
    forget_list(&tw->overdue);
    free(tw);
}

void tw_entry_init(tw_entry *e, tw_cb cb)
{
    e->next = e->prev = NULL;
    e->at = 0;
    e->cb = cb;
    e->tw = NULL;
}

int tw_entry_linked(const tw_entry *e) { return e->next != NULL; }

void tw_entry_cancel(tw_entry *e)
{
    if (!e->next) return;
    list_unlink(e);
    e->tw->count--;
    e->tw = NULL;
}

void timerwheel_add(timerwheel *tw, tw_entry *e, uint64_t at_ms)
{
    tw_entry_cancel(e);
    e->at = at_ms;
    e->tw = tw;
    tw->count++;
    if (at_ms <= tw->now) {
        list_append(&tw->overdue, e);
        if (at_ms < tw->overdue_min) tw->overdue_min = at_ms;
    } else {
        wheel_insert(tw, e);
    }
}

size_t timerwheel_count(const timerwheel *tw) { return tw->count; }

uint64_t timerwheel_now(const timerwheel *tw) { return tw->now; }

/* Lowest deadline bound over the wheel's slots (not `overdue`). When `tidy`,
 * occupancy bits of slots found empty are cleared on the way. */
static uint64_t earliest(timerwheel *tw, int tidy)
{
    uint64_t best = UINT64_MAX;
    for (unsigned L = 0; L < TW_LEVELS; L++) {
        uint64_t bits = tw->occupied[L];
        while (bits) {
            unsigned s = (unsigned)__builtin_ctzll(bits);
            if (!list_empty(&tw->slot[L][s])) {
                if (tw->slot_min[L][s] < best) best = tw->slot_min[L][s];
                break; /* lower slots of a level hold strictly earlier deadlines */
            }
            bits &= bits - 1;
            if (tidy) {
                tw->occupied[L] &= ~(UINT64_C(1) << s);
                tw->slot_min[L][s] = UINT64_MAX;
            }
        }
    }
    return best;
}

uint64_t timerwheel_next(const timerwheel *tw, uint64_t now_ms)
{
    (void)now_ms;
    uint64_t t = earliest((timerwheel *)tw, 0); /* tidy=0: does not write */
    if (!list_empty(&tw->overdue) && tw->overdue_min < t) t = tw->overdue_min;
    return t;
}

/* Moves now to t (> now), emptying every slot whose range starts at or before
 * t into `out`; the rest keep the invariant (see the comment at the top). */
static void advance(timerwheel *tw, uint64_t t, tw_entry *out)
{
    for (unsigned L = 0; L < TW_LEVELS; L++) {
        uint64_t bits = tw->occupied[L];
        if (!bits) continue;
        unsigned dn = digit(tw->now, L);
        uint64_t mask = dn == 63 ? 0 : ~UINT64_C(0) << (dn + 1); /* slots after now's */
        if (level_base(t, L) == level_base(tw->now, L)) {
            unsigned dt = digit(t, L);
            mask &= dt == 63 ? ~UINT64_C(0) : (UINT64_C(1) << (dt + 1)) - 1;
        }
        bits &= mask;
        tw->occupied[L] &= ~bits;
        while (bits) {
            unsigned s = (unsigned)__builtin_ctzll(bits);
            bits &= bits - 1;
            list_splice(out, &tw->slot[L][s]);
            tw->slot_min[L][s] = UINT64_MAX;
        }
    }
    tw->now = t;
}

/* Fires every entry of `list`, unlinking each before its callback so the
 * callback may re-add it; entries cancelled meanwhile just leave the list. */
static size_t fire_list(timerwheel *tw, tw_entry *list)
{
    size_t n = 0;
    while (!list_empty(list)) {
        tw_entry *e = list->next;
        list_unlink(e);
        e->tw = NULL;
        tw->count--;
        n++;
        e->cb(e);
    }
    return n;
}

size_t timerwheel_run(timerwheel *tw, uint64_t now_ms)
{
    tw_entry firing, moved;
    size_t n = 0;

    list_init(&firing);
    list_init(&moved);
    /* Overdue entries first; ones added by these callbacks wait for the next run. */
    list_splice(&firing, &tw->overdue);
    tw->overdue_min = UINT64_MAX;
    n += fire_list(tw, &firing);

    if (now_ms <= tw->now) return n;
    /* Step from one deadline bound to the next, so entries fire in deadline
     * order and the cost depends on entries, not on elapsed time. */
    for (;;) {
        uint64_t t = earliest(tw, 1);
        if (t > now_ms) break;
        if (t > tw->now) advance(tw, t, &moved);
        while (!list_empty(&moved)) {
            tw_entry *e = moved.next;
            list_unlink(e);
            if (e->at <= t) {
                list_append(&firing, e);
            } else {
                wheel_insert(tw, e);
            }
        }
        n += fire_list(tw, &firing);
    }
    /* Nothing else is due; entries of slots whose range merely starts before
     * now_ms cascade down so the invariant holds relative to now_ms. */
    if (now_ms > tw->now) advance(tw, now_ms, &moved);
    while (!list_empty(&moved)) {
        tw_entry *e = moved.next;
        list_unlink(e);
        wheel_insert(tw, e);
    }
    return n;
}
