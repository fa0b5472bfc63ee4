/*
 * dconn._pattern: string.find, match, gmatch and gsub for policies, with Lua 5.4's pattern
 * language and results, and a bound on the work of one call. Lua's own matcher runs inside C,
 * where the count hook that enforces a job's budgets never fires: a backtracking pattern
 * (("a*"):rep(20) .. "b" on a long subject) would hold the event loop for minutes. This matcher
 * counts its steps (one per pattern item tried at a position, one per character a repetition
 * scans) and raises once a call has taken more than PATTERN_STEPS plus PATTERN_STEPS_PER_BYTE per
 * byte of the subject: every linear pattern stays far below that, whatever the subject's size.
 * The sandbox puts these functions in a policy's `string` and behind string methods.
 */
#include <ctype.h>
#include <stddef.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "modules.h"

/* Steps one call may take: about 30 ms of matching here, plus room for linear work on long
 * subjects (a gsub over megabytes). */
#define PATTERN_STEPS 10000000LL
#define PATTERN_STEPS_PER_BYTE 100LL
#define MAX_CAPTURES 32 /* LUA_MAXCAPTURES */
#define MAX_DEPTH 200   /* nested matcher calls (Lua's MAXCCALLS): "pattern too complex" past it */
#define ESC '%'
#define SPECIALS "^$*+?.([%-"

enum { CAP_UNFINISHED = -1, CAP_POSITION = -2 };

typedef struct {
  const char *src, *src_end, *pat_end;
  lua_State *L;
  const char *what; /* the function's name, for errors */
  long long steps;  /* left in this call */
  long long bound;  /* the call's total, for the error */
  int depth;        /* nested calls left */
  int level;        /* captures open or closed so far */
  struct {
    const char *init;
    ptrdiff_t len;
  } cap[MAX_CAPTURES];
} matcher;

static void step(matcher *m) {
  if (--m->steps >= 0) return;
  luaL_error(m->L,
             "string.%s: pattern matching stopped after %I steps (the bound for this subject: %d "
             "plus %d per byte); the pattern backtracks too much, simplify it",
             m->what, (lua_Integer)m->bound, (int)PATTERN_STEPS, (int)PATTERN_STEPS_PER_BYTE);
}

static void start(matcher *m, lua_State *L, const char *what, const char *s, size_t ls, const char *p, size_t lp) {
  m->L = L;
  m->what = what;
  m->src = s;
  m->src_end = s + ls;
  m->pat_end = p + lp;
  m->bound = m->steps = PATTERN_STEPS + PATTERN_STEPS_PER_BYTE * (long long)ls;
}

/* Before each attempt at a new position: the step count goes on, captures start afresh. */
static void restart(matcher *m) {
  m->level = 0;
  m->depth = MAX_DEPTH;
}

/* 1-based init (negative from the end) to a 0-based offset; may be past the end. */
static size_t offset(lua_Integer pos, size_t len) {
  if (pos > 0) return (size_t)pos - 1;
  if (pos == 0 || pos < -(lua_Integer)len) return 0;
  return (size_t)((lua_Integer)len + pos);
}

static int class_matches(int c, int cl) {
  int r;
  switch (tolower(cl)) {
  case 'a': r = isalpha(c); break;
  case 'c': r = iscntrl(c); break;
  case 'd': r = isdigit(c); break;
  case 'g': r = isgraph(c); break;
  case 'l': r = islower(c); break;
  case 'p': r = ispunct(c); break;
  case 's': r = isspace(c); break;
  case 'u': r = isupper(c); break;
  case 'w': r = isalnum(c); break;
  case 'x': r = isxdigit(c); break;
  case 'z': r = c == 0; break; /* deprecated in Lua, still matched by it */
  default: return cl == c;
  }
  if (isupper(cl)) r = !r;
  return r != 0;
}

/* p at '[', close at its ']' */
static int set_matches(int c, const char *p, const char *close) {
  int yes = 1;
  if (p[1] == '^') {
    yes = 0;
    p++;
  }
  while (++p < close) {
    if (*p == ESC) {
      p++;
      if (class_matches(c, (unsigned char)*p)) return yes;
    } else if (p[1] == '-' && p + 2 < close) {
      p += 2;
      if ((unsigned char)p[-2] <= c && c <= (unsigned char)*p) return yes;
    } else if ((unsigned char)*p == c) {
      return yes;
    }
  }
  return !yes;
}

/* The end of the single-character item at p (past a class, an escape or a set). */
static const char *item_end(matcher *m, const char *p) {
  char c = *p++;
  if (c == ESC) {
    if (p >= m->pat_end) luaL_error(m->L, "malformed pattern (ends with '%%')");
    return p + 1;
  }
  if (c == '[') {
    if (*p == '^') p++;
    do { /* the first character of a set is itself, even ']' */
      if (p >= m->pat_end) luaL_error(m->L, "malformed pattern (missing ']')");
      if (*p++ == ESC && p < m->pat_end) p++;
    } while (*p != ']');
    return p + 1;
  }
  return p;
}

static int item_matches(matcher *m, const char *s, const char *p, const char *ep) {
  if (s >= m->src_end) return 0;
  int c = (unsigned char)*s;
  switch (*p) {
  case '.': return 1;
  case ESC: return class_matches(c, (unsigned char)p[1]);
  case '[': return set_matches(c, p, ep - 1);
  default: return (unsigned char)*p == c;
  }
}

static const char *match(matcher *m, const char *s, const char *p);

/* item* and item+: the longest run first, then shorter ones. */
static const char *longest(matcher *m, const char *s, const char *p, const char *ep) {
  ptrdiff_t n = 0;
  while (item_matches(m, s + n, p, ep)) {
    step(m);
    n++;
  }
  for (; n >= 0; n--) {
    const char *r = match(m, s + n, ep + 1);
    if (r) return r;
    step(m);
  }
  return NULL;
}

/* item-: the shortest run first. */
static const char *shortest(matcher *m, const char *s, const char *p, const char *ep) {
  for (;;) {
    const char *r = match(m, s, ep + 1);
    if (r) return r;
    if (!item_matches(m, s, p, ep)) return NULL;
    step(m);
    s++;
  }
}

static const char *open_capture(matcher *m, const char *s, const char *p, ptrdiff_t what) {
  if (m->level >= MAX_CAPTURES) luaL_error(m->L, "too many captures");
  m->cap[m->level].init = s;
  m->cap[m->level].len = what;
  m->level++;
  const char *r = match(m, s, p);
  if (!r) m->level--;
  return r;
}

static const char *close_capture(matcher *m, const char *s, const char *p) {
  int l = m->level - 1;
  while (l >= 0 && m->cap[l].len != CAP_UNFINISHED) l--;
  if (l < 0) luaL_error(m->L, "invalid pattern capture");
  m->cap[l].len = s - m->cap[l].init;
  const char *r = match(m, s, p);
  if (!r) m->cap[l].len = CAP_UNFINISHED;
  return r;
}

static int capture_index(matcher *m, int c) {
  int l = c - '1';
  if (l < 0 || l >= m->level || m->cap[l].len == CAP_UNFINISHED)
    return luaL_error(m->L, "invalid capture index %%%d", l + 1);
  return l;
}

/* %1..%9: the same text again */
static const char *back_reference(matcher *m, const char *s, int c) {
  int l = capture_index(m, c);
  size_t len = (size_t)m->cap[l].len;
  if ((size_t)(m->src_end - s) >= len && memcmp(m->cap[l].init, s, len) == 0) return s + len;
  return NULL;
}

/* %bxy: a balanced run from x to its y */
static const char *balanced(matcher *m, const char *s, const char *p) {
  if (p >= m->pat_end - 1) luaL_error(m->L, "malformed pattern (missing arguments to '%%b')");
  if (s >= m->src_end || *s != *p) return NULL;
  int open = 1;
  while (++s < m->src_end) {
    step(m);
    if (*s == p[1]) {
      if (--open == 0) return s + 1;
    } else if (*s == *p) {
      open++;
    }
  }
  return NULL;
}

/* Where the pattern from p matches at s ends, or NULL. Loops on what a single item decides and
 * recurses where it must try alternatives. */
static const char *match(matcher *m, const char *s, const char *p) {
  if (m->depth-- == 0) luaL_error(m->L, "pattern too complex");
  for (;;) {
    step(m);
    if (p == m->pat_end) break;
    if (*p == '(') {
      s = p[1] == ')' ? open_capture(m, s, p + 2, CAP_POSITION) : open_capture(m, s, p + 1, CAP_UNFINISHED);
      break;
    }
    if (*p == ')') {
      s = close_capture(m, s, p + 1);
      break;
    }
    if (*p == '$' && p + 1 == m->pat_end) {
      if (s != m->src_end) s = NULL;
      break;
    }
    if (*p == ESC && p[1] == 'b') {
      s = balanced(m, s, p + 2);
      if (!s) break;
      p += 4;
      continue;
    }
    if (*p == ESC && p[1] == 'f') {
      p += 2;
      if (*p != '[') luaL_error(m->L, "missing '[' after '%%f' in pattern");
      const char *ep = item_end(m, p);
      int before = s == m->src ? 0 : (unsigned char)s[-1];
      int here = s < m->src_end ? (unsigned char)*s : 0;
      if (!set_matches(before, p, ep - 1) && set_matches(here, p, ep - 1)) {
        p = ep;
        continue;
      }
      s = NULL;
      break;
    }
    if (*p == ESC && isdigit((unsigned char)p[1])) {
      s = back_reference(m, s, (unsigned char)p[1]);
      if (!s) break;
      p += 2;
      continue;
    }
    /* a single-character item, maybe with a repetition */
    const char *ep = item_end(m, p);
    if (!item_matches(m, s, p, ep)) {
      if (*ep == '*' || *ep == '?' || *ep == '-') { /* zero of it is a match */
        p = ep + 1;
        continue;
      }
      s = NULL;
      break;
    }
    if (*ep == '?') {
      const char *r = match(m, s + 1, ep + 1);
      if (r) {
        s = r;
        break;
      }
      p = ep + 1;
      continue;
    }
    if (*ep == '+') {
      s = longest(m, s + 1, p, ep);
      break;
    }
    if (*ep == '*') {
      s = longest(m, s, p, ep);
      break;
    }
    if (*ep == '-') {
      s = shortest(m, s, p, ep);
      break;
    }
    s++;
    p = ep;
  }
  m->depth++;
  return s;
}

/* Pushes capture i (or the whole match s..e when the pattern has none and i is 0). */
static void push_capture(matcher *m, int i, const char *s, const char *e) {
  if (i >= m->level) {
    if (i != 0) luaL_error(m->L, "invalid capture index %%%d", i + 1);
    lua_pushlstring(m->L, s, (size_t)(e - s));
    return;
  }
  ptrdiff_t len = m->cap[i].len;
  if (len == CAP_UNFINISHED) luaL_error(m->L, "unfinished capture");
  if (len == CAP_POSITION) lua_pushinteger(m->L, (m->cap[i].init - m->src) + 1);
  else lua_pushlstring(m->L, m->cap[i].init, (size_t)len);
}

/* The captures, or the whole match when there are none and s is given; returns their count. */
static int push_captures(matcher *m, const char *s, const char *e) {
  int n = (m->level == 0 && s) ? 1 : m->level;
  luaL_checkstack(m->L, n, "too many captures");
  for (int i = 0; i < n; i++) push_capture(m, i, s, e);
  return n;
}

static int has_specials(const char *p, size_t lp) {
  for (size_t i = 0; i < lp; i++)
    if (p[i] && strchr(SPECIALS, p[i])) return 1;
  return 0;
}

static const char *find_plain(const char *s, size_t ls, const char *p, size_t lp) {
  if (lp == 0) return s;
  if (lp > ls) return NULL;
  const char *end = s + ls - lp + 1;
  while (s < end) {
    const char *hit = memchr(s, *p, (size_t)(end - s));
    if (!hit) return NULL;
    if (memcmp(hit + 1, p + 1, lp - 1) == 0) return hit;
    s = hit + 1;
  }
  return NULL;
}

static int find_or_match(lua_State *L, int find) {
  size_t ls, lp;
  const char *s = luaL_checklstring(L, 1, &ls);
  const char *p = luaL_checklstring(L, 2, &lp);
  size_t init = offset(luaL_optinteger(L, 3, 1), ls);
  if (init > ls) {
    luaL_pushfail(L);
    return 1;
  }
  if (find && (lua_toboolean(L, 4) || !has_specials(p, lp))) {
    const char *hit = find_plain(s + init, ls - init, p, lp);
    if (!hit) {
      luaL_pushfail(L);
      return 1;
    }
    lua_pushinteger(L, (hit - s) + 1);
    lua_pushinteger(L, (lua_Integer)((size_t)(hit - s) + lp));
    return 2;
  }
  matcher m;
  int anchor = *p == '^';
  if (anchor) {
    p++;
    lp--;
  }
  start(&m, L, find ? "find" : "match", s, ls, p, lp);
  const char *at = s + init;
  do {
    restart(&m);
    const char *e = match(&m, at, p);
    if (e) {
      if (!find) return push_captures(&m, at, e);
      lua_pushinteger(L, (at - s) + 1);
      lua_pushinteger(L, e - s);
      return push_captures(&m, NULL, NULL) + 2;
    }
  } while (at++ < m.src_end && !anchor);
  luaL_pushfail(L);
  return 1;
}

static int pattern_find(lua_State *L) { return find_or_match(L, 1); }
static int pattern_match(lua_State *L) { return find_or_match(L, 0); }

typedef struct {
  const char *at, *last, *pat;
  matcher m;
} iteration;

/* upvalues: subject, pattern, iteration */
static int gmatch_next(lua_State *L) {
  iteration *it = lua_touserdata(L, lua_upvalueindex(3));
  it->m.L = L;
  it->m.steps = it->m.bound; /* each match gets the whole bound */
  for (const char *at = it->at; at <= it->m.src_end; at++) {
    restart(&it->m);
    const char *e = match(&it->m, at, it->pat);
    if (e && e != it->last) {
      it->at = it->last = e;
      return push_captures(&it->m, at, e);
    }
  }
  return 0;
}

static int pattern_gmatch(lua_State *L) {
  size_t ls, lp;
  const char *s = luaL_checklstring(L, 1, &ls);
  const char *p = luaL_checklstring(L, 2, &lp);
  size_t init = offset(luaL_optinteger(L, 3, 1), ls);
  if (init > ls) init = ls + 1; /* nothing left to match */
  lua_settop(L, 2); /* the strings stay alive as upvalues */
  iteration *it = lua_newuserdatauv(L, sizeof *it, 0);
  start(&it->m, L, "gmatch", s, ls, p, lp);
  it->at = s + init;
  it->last = NULL;
  it->pat = p;
  lua_pushcclosure(L, gmatch_next, 3);
  return 1;
}

/* A replacement string's %0-%9 and %%. */
static void add_template(matcher *m, luaL_Buffer *b, const char *s, const char *e) {
  size_t l;
  const char *t = lua_tolstring(m->L, 3, &l);
  const char *pc;
  while ((pc = memchr(t, ESC, l)) != NULL) {
    luaL_addlstring(b, t, (size_t)(pc - t));
    pc++;
    if (*pc == ESC) {
      luaL_addchar(b, *pc);
    } else if (*pc == '0') {
      luaL_addlstring(b, s, (size_t)(e - s));
    } else if (isdigit((unsigned char)*pc)) {
      push_capture(m, *pc - '1', s, e);
      luaL_addvalue(b); /* a position capture, a number, as its text */
    } else {
      luaL_error(m->L, "invalid use of '%c' in replacement string", ESC);
    }
    l -= (size_t)(pc + 1 - t);
    t = pc + 1;
  }
  luaL_addlstring(b, t, l);
}

/* Adds the replacement of the match s..e; returns whether it changed anything. */
static int add_replacement(matcher *m, luaL_Buffer *b, const char *s, const char *e, int kind) {
  lua_State *L = m->L;
  if (kind == LUA_TFUNCTION) {
    lua_pushvalue(L, 3);
    int n = push_captures(m, s, e);
    lua_call(L, n, 1);
  } else if (kind == LUA_TTABLE) {
    push_capture(m, 0, s, e);
    lua_gettable(L, 3);
  } else {
    add_template(m, b, s, e);
    return 1;
  }
  if (!lua_toboolean(L, -1)) { /* nil or false: keep the original */
    lua_pop(L, 1);
    luaL_addlstring(b, s, (size_t)(e - s));
    return 0;
  }
  if (!lua_isstring(L, -1)) return luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
  luaL_addvalue(b);
  return 1;
}

static int pattern_gsub(lua_State *L) {
  size_t ls, lp;
  const char *s = luaL_checklstring(L, 1, &ls);
  const char *p = luaL_checklstring(L, 2, &lp);
  int kind = lua_type(L, 3);
  lua_Integer max = luaL_optinteger(L, 4, (lua_Integer)ls + 1);
  luaL_argexpected(L, kind == LUA_TNUMBER || kind == LUA_TSTRING || kind == LUA_TFUNCTION || kind == LUA_TTABLE, 3,
                   "string/function/table");
  int anchor = *p == '^';
  if (anchor) {
    p++;
    lp--;
  }
  matcher m;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  start(&m, L, "gsub", s, ls, p, lp);
  const char *at = s, *last = NULL;
  lua_Integer n = 0;
  int changed = 0;
  while (n < max) {
    restart(&m);
    const char *e = match(&m, at, p);
    if (e && e != last) {
      n++;
      changed |= add_replacement(&m, &b, at, e, kind);
      at = last = e;
    } else if (at < m.src_end) {
      luaL_addchar(&b, *at++);
    } else {
      break;
    }
    if (anchor) break;
  }
  if (!changed) {
    lua_pushvalue(L, 1);
  } else {
    luaL_addlstring(&b, at, (size_t)(m.src_end - at));
    luaL_pushresult(&b);
  }
  lua_pushinteger(L, n);
  return 2;
}

static const luaL_Reg pattern_functions[] = {
    {"find", pattern_find}, {"match", pattern_match}, {"gmatch", pattern_gmatch}, {"gsub", pattern_gsub}, {NULL, NULL},
};

int luaopen_dconn_pattern(lua_State *L) {
  luaL_newlib(L, pattern_functions);
  lua_pushinteger(L, PATTERN_STEPS);
  lua_setfield(L, -2, "STEPS");
  lua_pushinteger(L, PATTERN_STEPS_PER_BYTE);
  lua_setfield(L, -2, "STEPS_PER_BYTE");
  return 1;
}
