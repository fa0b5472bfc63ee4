/*
 * The one clock. Everything that needs "now" (scheduler, sleep, log timestamps, os.time in Lua)
 * asks it, so a backtest can swap in a simulated clock and replay days at full speed.
 *
 * Real mode: wall time at start-up plus monotonic time since (immune to wall-clock steps).
 * Simulated mode: time stands still while any I/O is in flight, and jumps straight to the
 * next timer when nothing else is pending.
 */
#ifndef DCONN_CLOCK_H
#define DCONN_CLOCK_H

#include <stdbool.h>
#include <uv.h>

typedef struct dc_clock dc_clock;
typedef struct dc_clock_timer dc_clock_timer;
typedef void (*dc_clock_fn)(void *ud);
/* Asked before a simulated jump: true while operations other than clock waits are in flight. */
typedef bool (*dc_clock_busy_fn)(void *ud);

dc_clock *dc_clock_new(uv_loop_t *loop, dc_clock_busy_fn busy, void *busy_ud);
void dc_clock_free(dc_clock *c);

double dc_clock_now(const dc_clock *c);
bool dc_clock_is_simulated(const dc_clock *c);
/* Switches to simulated time starting at `start` (unix seconds); pending timers keep their
 * distance from now. */
void dc_clock_simulate(dc_clock *c, double start);

/* Simulated mode only: moves time forward by `seconds` without firing anything, as a stalled
 * process would see it; overdue timers fire on the next pass. */
void dc_clock_advance(dc_clock *c, double seconds);

/* Calls fn(ud) once at `due` (clock seconds). Returns NULL only when out of memory. */
dc_clock_timer *dc_clock_at(dc_clock *c, double due, dc_clock_fn fn, void *ud);
/* Cancels a timer that has not fired yet (a fired timer is already gone: don't cancel it). */
void dc_clock_cancel(dc_clock *c, dc_clock_timer *t);
/* Re-arms the underlying libuv timer; call when the busy state may have changed. */
void dc_clock_kick(dc_clock *c);
int dc_clock_pending(const dc_clock *c);

#endif
