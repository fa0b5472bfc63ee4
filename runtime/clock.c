/* The one clock and its timers: a binary min-heap over a single uv_timer_t. */
#include "clock.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>

struct dc_clock_timer {
  double due;
  unsigned long long seq; /* ties fire in the order they were added */
  size_t slot;            /* index in the heap, kept up to date for O(log n) cancel */
  dc_clock_fn fn;
  void *ud;
};

struct dc_clock {
  uv_loop_t *loop;
  uv_timer_t *uv; /* outlives the clock until its close callback */
  bool simulated;
  double wall_origin;     /* real mode: wall seconds at hr_origin */
  unsigned long long hr_origin;
  double sim_now;
  dc_clock_timer **heap;
  size_t count, capacity;
  unsigned long long next_seq;
  dc_clock_busy_fn busy;
  void *busy_ud;
};

static bool earlier(const dc_clock_timer *a, const dc_clock_timer *b) {
  return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void heap_place(dc_clock *c, size_t i, dc_clock_timer *t) {
  c->heap[i] = t;
  t->slot = i;
}

static void sift_up(dc_clock *c, size_t i) {
  dc_clock_timer *t = c->heap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!earlier(t, c->heap[parent])) break;
    heap_place(c, i, c->heap[parent]);
    i = parent;
  }
  heap_place(c, i, t);
}

static void sift_down(dc_clock *c, size_t i) {
  dc_clock_timer *t = c->heap[i];
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= c->count) break;
    if (child + 1 < c->count && earlier(c->heap[child + 1], c->heap[child])) child++;
    if (!earlier(c->heap[child], t)) break;
    heap_place(c, i, c->heap[child]);
    i = child;
  }
  heap_place(c, i, t);
}

static void heap_remove(dc_clock *c, size_t i) {
  c->count--;
  if (i == c->count) return;
  heap_place(c, i, c->heap[c->count]);
  sift_down(c, i);
  sift_up(c, c->heap[i]->slot);
}

static double real_now(const dc_clock *c) { return c->wall_origin + (double)(uv_hrtime() - c->hr_origin) / 1e9; }

double dc_clock_now(const dc_clock *c) { return c->simulated ? c->sim_now : real_now(c); }

bool dc_clock_is_simulated(const dc_clock *c) { return c->simulated; }

int dc_clock_pending(const dc_clock *c) { return (int)c->count; }

static void on_uv_timer(uv_timer_t *handle);

/* Fires every timer that is due. In simulated mode, first jumps to the earliest one. */
static void fire_due(dc_clock *c) {
  if (c->simulated && c->count > 0) {
    if (c->busy && c->busy(c->busy_ud)) return; /* I/O in flight: time stands still */
    if (c->heap[0]->due > c->sim_now) c->sim_now = c->heap[0]->due;
  }
  double now = dc_clock_now(c);
  /* Only timers due at the start of this pass: callbacks that add new due timers wait for the
   * next pass, so a zero-delay loop cannot starve the event loop. */
  unsigned long long seq_limit = c->next_seq;
  while (c->count > 0 && c->heap[0]->due <= now && c->heap[0]->seq < seq_limit) {
    dc_clock_timer *t = c->heap[0];
    heap_remove(c, 0);
    dc_clock_fn fn = t->fn;
    void *ud = t->ud;
    free(t);
    fn(ud);
    if (c->simulated) break; /* one instant at a time; the next pass may jump again */
  }
  dc_clock_kick(c);
}

static void on_uv_timer(uv_timer_t *handle) { fire_due(handle->data); }

void dc_clock_kick(dc_clock *c) {
  if (c->count == 0) {
    uv_timer_stop(c->uv);
    return;
  }
  if (c->simulated) {
    if (c->busy && c->busy(c->busy_ud)) {
      uv_timer_stop(c->uv); /* the I/O completion kicks us again */
      return;
    }
    uv_timer_start(c->uv, on_uv_timer, 0, 0);
    return;
  }
  double wait = c->heap[0]->due - real_now(c);
  uint64_t ms = wait <= 0 ? 0 : (uint64_t)ceil(wait * 1000.0);
  uv_update_time(c->loop);
  uv_timer_start(c->uv, on_uv_timer, ms, 0);
}

dc_clock_timer *dc_clock_at(dc_clock *c, double due, dc_clock_fn fn, void *ud) {
  if (c->count == c->capacity) {
    size_t cap = c->capacity ? c->capacity * 2 : 16;
    dc_clock_timer **heap = realloc(c->heap, cap * sizeof *heap);
    if (!heap) return NULL;
    c->heap = heap;
    c->capacity = cap;
  }
  dc_clock_timer *t = malloc(sizeof *t);
  if (!t) return NULL;
  t->due = due;
  t->seq = c->next_seq++;
  t->fn = fn;
  t->ud = ud;
  c->heap[c->count] = t;
  t->slot = c->count++;
  sift_up(c, t->slot);
  if (c->heap[0] == t) dc_clock_kick(c);
  return t;
}

void dc_clock_cancel(dc_clock *c, dc_clock_timer *t) {
  if (!t) return;
  heap_remove(c, t->slot);
  free(t);
  dc_clock_kick(c);
}

void dc_clock_simulate(dc_clock *c, double start) {
  double shift = start - dc_clock_now(c);
  for (size_t i = 0; i < c->count; i++) c->heap[i]->due += shift;
  c->simulated = true;
  c->sim_now = start;
  dc_clock_kick(c);
}

void dc_clock_advance(dc_clock *c, double seconds) {
  if (!c->simulated || !(seconds > 0)) return;
  c->sim_now += seconds;
  dc_clock_kick(c);
}

dc_clock *dc_clock_new(uv_loop_t *loop, dc_clock_busy_fn busy, void *busy_ud) {
  dc_clock *c = calloc(1, sizeof *c);
  if (!c) goto fail;
  c->uv = malloc(sizeof *c->uv);
  if (!c->uv) goto fail;
  c->loop = loop;
  c->busy = busy;
  c->busy_ud = busy_ud;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  c->hr_origin = uv_hrtime();
  c->wall_origin = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
  uv_timer_init(loop, c->uv);
  c->uv->data = c;
  return c;
fail:
  free(c);
  return NULL;
}

static void free_handle(uv_handle_t *h) { free(h); }

void dc_clock_free(dc_clock *c) {
  if (!c) return;
  for (size_t i = 0; i < c->count; i++) free(c->heap[i]);
  free(c->heap);
  uv_close((uv_handle_t *)c->uv, free_handle);
  free(c);
}
