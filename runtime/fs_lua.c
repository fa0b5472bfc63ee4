/*
 * dconn._fs: the few file-system operations the library needs, done in-process (plain POSIX,
 * synchronous: small local operations), so nothing shells out to mkdir, find or pwd (the
 * container image has no shell). Wrapped by lua/dconn/fs.lua, which turns failures into
 * dconn.error values.
 *
 * Runtime failures return nil, message, errno name ("ENOSPC"), reason (the message without what
 * failed: "No space left on device (ENOSPC)"); misuse raises.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <uv.h>

#include "luaopts.h"
#include "modules.h"

static const char *errno_name(int err) {
  const char *name = strerrorname_np(err);
  return name ? name : "EIO";
}

/* Pushes nil, "<what> <path>: <strerror> (<ENAME>)", "<ENAME>", "<strerror> (<ENAME>)"; returns 4. */
static int fail(lua_State *L, const char *what, const char *path, int err) {
  lua_pushnil(L);
  lua_pushfstring(L, "%s %s: %s (%s)", what, path, strerror(err), errno_name(err));
  lua_pushstring(L, errno_name(err));
  lua_pushfstring(L, "%s (%s)", strerror(err), errno_name(err));
  return 4;
}

static bool is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* fs.mkdir_p(path) -> true: every missing directory on the way, like mkdir -p. */
static int fs_mkdir_p(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  luaL_argcheck(L, len > 0 && len < PATH_MAX, 1, "expected a path");
  char buf[PATH_MAX];
  memcpy(buf, path, len + 1);
  for (char *p = buf + 1;; p++) { /* each prefix ending before a '/', then the whole path */
    bool end = *p == '\0';
    if (*p != '/' && !end) continue;
    *p = '\0';
    if (mkdir(buf, 0777) != 0 && !(errno == EEXIST && is_dir(buf)))
      return fail(L, "cannot create directory", buf, errno == EEXIST ? ENOTDIR : errno);
    if (end) break;
    *p = '/';
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* An open directory or file held by a userdata while Lua values are made, so a memory error (the
 * heap cap) still closes it. */
typedef struct handle {
  DIR *dir;
  int fd;
} handle;

static const char HANDLE_MT[] = "dconn._fs.handle";

static void handle_close(handle *h) {
  if (h->dir) closedir(h->dir);
  if (h->fd >= 0) close(h->fd);
  h->dir = NULL;
  h->fd = -1;
}

static int handle_gc(lua_State *L) {
  handle_close(luaL_checkudata(L, 1, HANDLE_MT));
  return 0;
}

static handle *handle_new(lua_State *L) {
  handle *h = lua_newuserdatauv(L, sizeof *h, 0);
  h->dir = NULL;
  h->fd = -1;
  luaL_setmetatable(L, HANDLE_MT);
  return h;
}

static const char *type_of(mode_t mode) {
  if (S_ISREG(mode)) return "file";
  if (S_ISDIR(mode)) return "dir";
  return "other";
}

static int compare_names(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static const char *const LIST_KEYS[] = {"type", NULL};

/* fs.list(dir [, {type = "file" | "dir"}]) -> sorted names (no "." or ".."). A type is read
 * through symbolic links: a link to a file counts as a file. */
static int fs_list(lua_State *L) {
  const char *dir = luaL_checkstring(L, 1);
  const char *want = NULL;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    dc_opts_check(L, 2, "fs.list", LIST_KEYS);
    if (dc_opt_string(L, 2, "fs.list", "type", &want, NULL) && strcmp(want, "file") != 0 && strcmp(want, "dir") != 0)
      luaL_error(L, "fs.list: 'type' must be \"file\" or \"dir\", got \"%s\"", want);
  }
  lua_settop(L, 2);
  handle *h = handle_new(L);
  lua_newtable(L); /* stack: dir opts handle names */
  if (!(h->dir = opendir(dir))) return fail(L, "cannot list", dir, errno);
  int n = 0;
  struct dirent *e;
  errno = 0;
  while ((e = readdir(h->dir)) != NULL) {
    struct stat st;
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (want && (fstatat(dirfd(h->dir), e->d_name, &st, 0) != 0 || strcmp(type_of(st.st_mode), want) != 0)) {
      errno = 0; /* a name gone meanwhile, or a dangling link: not listed */
      continue;
    }
    lua_pushstring(L, e->d_name);
    lua_rawseti(L, 4, ++n);
    errno = 0;
  }
  int err = errno;
  handle_close(h);
  if (err) return fail(L, "cannot list", dir, err);
  /* sorted by bytes; the strings stay anchored in names while the array points at them */
  const char **sorted = lua_newuserdatauv(L, sizeof *sorted * (size_t)(n ? n : 1), 0);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 4, i);
    sorted[i - 1] = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  qsort(sorted, (size_t)n, sizeof *sorted, compare_names);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushstring(L, sorted[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* fs.stat(path) -> {type = "file" | "dir" | "other", size =, mtime =} (through links) */
static int fs_stat(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  if (stat(path, &st) != 0) return fail(L, "cannot stat", path, errno);
  lua_createtable(L, 0, 3);
  lua_pushstring(L, type_of(st.st_mode));
  lua_setfield(L, -2, "type");
  lua_pushinteger(L, (lua_Integer)st.st_size);
  lua_setfield(L, -2, "size");
  lua_pushnumber(L, (lua_Number)st.st_mtim.tv_sec + (lua_Number)st.st_mtim.tv_nsec / 1e9);
  lua_setfield(L, -2, "mtime");
  return 1;
}

static int fs_realpath(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char buf[PATH_MAX];
  if (!realpath(path, buf)) return fail(L, "cannot resolve", path, errno);
  lua_pushstring(L, buf);
  return 1;
}

static int fs_cwd(lua_State *L) {
  char buf[PATH_MAX];
  if (!getcwd(buf, sizeof buf)) return fail(L, "cannot read", "the working directory", errno);
  lua_pushstring(L, buf);
  return 1;
}

/* fs.read_file(path) -> the whole file, as bytes */
static int fs_read_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  handle *h = handle_new(L);
  if ((h->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) return fail(L, "cannot read", path, errno);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (;;) {
    char *p = luaL_prepbuffer(&b);
    ssize_t n = read(h->fd, p, LUAL_BUFFERSIZE);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      handle_close(h);
      return fail(L, "cannot read", path, err);
    }
    if (n == 0) break;
    luaL_addsize(&b, (size_t)n);
  }
  handle_close(h);
  luaL_pushresult(&b);
  return 1;
}

/* fs.remove(path): a file or an empty directory. */
static int fs_remove(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  if (remove(path) != 0) return fail(L, "cannot remove", path, errno);
  lua_pushboolean(L, 1);
  return 1;
}

static int write_all(int fd, const char *data, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, data, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    data += n;
    len -= (size_t)n;
  }
  return 0;
}

/* The directory's entry (the rename) reaches the disk too; file systems that cannot sync a
 * directory (EINVAL) have nothing to sync. */
static int sync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = fsync(fd) != 0 && errno != EINVAL ? -1 : 0;
  int err = errno;
  close(fd);
  errno = err;
  return rc;
}

/* fs.write_atomic(path, data) -> true: readers see the old file or the whole new one, never a
 * part. A temporary file beside path (path.tmp-XXXXXX) gets every byte, is synced and renamed
 * over path; on any failure it is removed and path is left as it was. The new file keeps an
 * existing file's mode, else 0666 less the umask (mkstemp's own 0600 would hide it). */
static int fs_write_atomic(lua_State *L) {
  size_t plen, len;
  const char *path = luaL_checklstring(L, 1, &plen);
  const char *data = luaL_checklstring(L, 2, &len);
  luaL_argcheck(L, plen > 0 && plen + 12 < PATH_MAX, 1, "expected a path");
  char tmp[PATH_MAX], dir[PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", path);
  const char *slash = strrchr(path, '/');
  if (!slash) snprintf(dir, sizeof dir, ".");
  else if (slash == path) snprintf(dir, sizeof dir, "/");
  else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
  struct stat st;
  mode_t mode;
  if (stat(path, &st) == 0) {
    mode = st.st_mode & 07777;
  } else {
    mode_t mask = umask(0);
    umask(mask);
    mode = 0666 & ~mask;
  }
  int fd = mkostemp(tmp, O_CLOEXEC); /* not inherited by programs dconn runs (exec plugins) */
  if (fd < 0) return fail(L, "cannot write", path, errno);
  int err = 0;
  if (fchmod(fd, mode) != 0 || write_all(fd, data, len) != 0 || fsync(fd) != 0) err = errno;
  if (close(fd) != 0 && !err) err = errno;
  if (!err && rename(tmp, path) != 0) err = errno;
  if (err) {
    unlink(tmp);
    return fail(L, "cannot write", path, err);
  }
  if (sync_dir(dir) != 0) return fail(L, "cannot sync the directory of", path, errno);
  lua_pushboolean(L, 1);
  return 1;
}

/* isatty(fd): whether a standard stream is a terminal (a progress bar is drawn only there). */
static int fs_isatty(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 0 && fd <= 2, 1, "0, 1 or 2 (stdin, stdout, stderr)");
  lua_pushboolean(L, isatty((int)fd));
  return 1;
}

/* fs.rename(from, to) -> true: rename(2), then the new entry's directory synced, so a
 * directory filled under a temporary name appears whole or not at all, after a crash too. */
static int fs_rename(lua_State *L) {
  const char *from = luaL_checkstring(L, 1);
  const char *to = luaL_checkstring(L, 2);
  if (rename(from, to) != 0) return fail(L, "cannot rename", from, errno);
  char dir[PATH_MAX];
  const char *slash = strrchr(to, '/');
  if (!slash) snprintf(dir, sizeof dir, ".");
  else if (slash == to) snprintf(dir, sizeof dir, "/");
  else snprintf(dir, sizeof dir, "%.*s", (int)(slash - to), to);
  if (sync_dir(dir) != 0) return fail(L, "cannot sync the directory of", to, errno);
  lua_pushboolean(L, 1);
  return 1;
}

/* fs.random_hex(nbytes) -> 2 * nbytes hex digits from the system's random source (getrandom):
 * identifiers (run ids) that neither another process nor a policy's math.randomseed can repeat. */
static int fs_random_hex(lua_State *L) {
  unsigned char bytes[64];
  char hex[2 * sizeof bytes];
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 1 && n <= (lua_Integer)sizeof bytes, 1, "1 to 64 bytes");
  int rc = uv_random(NULL, NULL, bytes, (size_t)n, 0, NULL);
  if (rc != 0) return luaL_error(L, "fs.random_hex: %s", uv_strerror(rc));
  for (lua_Integer i = 0; i < n; i++) snprintf(hex + 2 * i, 3, "%02x", bytes[i]);
  lua_pushlstring(L, hex, (size_t)(2 * n));
  return 1;
}

static const luaL_Reg fs_functions[] = {
    {"mkdir_p", fs_mkdir_p},
    {"list", fs_list},
    {"stat", fs_stat},
    {"realpath", fs_realpath},
    {"cwd", fs_cwd},
    {"remove", fs_remove},
    {"rename", fs_rename},
    {"read_file", fs_read_file},
    {"isatty", fs_isatty},
    {"random_hex", fs_random_hex},
    {"write_atomic", fs_write_atomic},
    {NULL, NULL},
};

int luaopen_dconn_fs(lua_State *L) {
  luaL_newmetatable(L, HANDLE_MT);
  lua_pushcfunction(L, handle_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newlib(L, fs_functions);
  return 1;
}
