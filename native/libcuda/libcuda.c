/* The library's mode (decided once, at the first call), its log, and the bypass to a real driver.
 * See libcuda.h for the modes and docs/transparency.md for what users see. */
#include "libcuda.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- log ---------------------------------------------------------------------------------- */

static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static int log_fd = -1;

static void log_open(void) {
  const char *where = getenv("OPENMPS_LIBCUDA_LOG");
  if (where == NULL || where[0] == '\0' || strcmp(where, "0") == 0) return;
  if (strcmp(where, "1") == 0 || strcmp(where, "stderr") == 0) {
    log_fd = STDERR_FILENO;
    return;
  }
  /* A file the user named. O_CLOEXEC: a child the program execs opens its own. */
  log_fd = open(where, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

void omlc_log(const char *fmt, ...) {
  pthread_once(&log_once, log_open);
  if (log_fd < 0) return;
  char line[512];
  int n = snprintf(line, sizeof line, "openmps-libcuda[%ld]: ", (long)getpid());
  if (n < 0) return;
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  if (m < 0) return;
  size_t len = (size_t)n + (size_t)m;
  if (len > sizeof line - 2) len = sizeof line - 2;
  line[len++] = '\n';
  /* One write per line, so lines of several threads or processes sharing the file never mix. */
  ssize_t w;
  do w = write(log_fd, line, len);
  while (w < 0 && errno == EINTR);
}

/* ---- trace ------------------------------------------------------------------------------- */

/* OPENMPS_LIBCUDA_TRACE=1 logs every call the library serves itself (MPS and no-daemon modes)
 * with its result, every export table handed out and every cuGetProcAddress answer: what a
 * program asked for before it failed when nothing it asked for failed (cuBLAS's
 * CUBLAS_STATUS_NOT_INITIALIZED, for one). Off by default: one branch a call. */
static pthread_once_t trace_once = PTHREAD_ONCE_INIT;
static int trace_on;
static void trace_open(void) {
  const char *v = getenv("OPENMPS_LIBCUDA_TRACE");
  trace_on = v != NULL && v[0] != '\0' && strcmp(v, "0") != 0;
}
int omlc_tracing(void) {
  pthread_once(&trace_once, trace_open);
  return trace_on;
}
CUresult omlc_traced(unsigned i, CUresult rc) {
  if (omlc_tracing() && i < OMLC_SYMBOL_COUNT) {
    const char *name = NULL;
    for (unsigned k = 0; k < omlc_result_count; k++) {
      if (omlc_results[k].code == (int)rc) name = omlc_results[k].name;
    }
    omlc_log("trace: %s -> %d %s", omlc_symbols[i].name, (int)rc, name != NULL ? name : "?");
  }
  return rc;
}

/* ---- mode --------------------------------------------------------------------------------- */

static pthread_once_t mode_once = PTHREAD_ONCE_INIT;
static omlc_mode_t mode = OMLC_MODE_NONE;
static void *real_handle;
static omlc_fn real_fns[OMLC_SYMBOL_COUNT];
static char control_path[sizeof(((struct sockaddr_un *)0)->sun_path)];

/* MPS mode is chosen when the control socket accepts a connection: a socket file left by a dead
 * daemon refuses it, so it does not count. The session itself is opened by cuInit (mps.c). */
static int daemon_answers(void) {
  const char *pipe_dir = getenv("OPENMPS_PIPE_DIRECTORY");
  if (pipe_dir == NULL || pipe_dir[0] == '\0') pipe_dir = "/tmp/openmps";
  int n = snprintf(control_path, sizeof control_path, "%s/control", pipe_dir);
  if (n < 0 || (size_t)n >= sizeof control_path) {
    omlc_log("pipe directory %s is too long for a socket path (%zu bytes at most)", pipe_dir,
             sizeof control_path - sizeof "/control");
    control_path[0] = '\0';
    return 0;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, control_path, (size_t)n + 1);
  int rc;
  do rc = connect(fd, (const struct sockaddr *)&addr, sizeof addr);
  while (rc < 0 && errno == EINTR);
  close(fd);
  return rc == 0;
}

/* This library's own file, to be skipped when looking for the real driver. */
static int own_file(struct stat *st, char *dir, size_t dir_len) {
  Dl_info info;
  if (dladdr((const void *)omlc_mode, &info) == 0 || info.dli_fname == NULL) return 0;
  if (stat(info.dli_fname, st) != 0) return 0;
  char resolved[PATH_MAX];
  if (realpath(info.dli_fname, resolved) == NULL) return 0;
  char *slash = strrchr(resolved, '/');
  if (slash == NULL) return 0;
  *slash = '\0';
  snprintf(dir, dir_len, "%s", resolved);
  return 1;
}

/* Tries a file as the real driver. Never this library itself: not its file under another name
 * (same device and inode), and not an object whose cuInit turns out to be ours (a copy already
 * loaded under another path). */
static int try_real_file(const char *path, const struct stat *own, int have_own) {
  struct stat st;
  if (stat(path, &st) != 0) return 0;
  if (have_own && st.st_dev == own->st_dev && st.st_ino == own->st_ino) return 0;
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    omlc_log("bypass: %s does not load: %s", path, dlerror());
    return 0;
  }
  void *init = dlsym(h, "cuInit");
  if (init == NULL || init == (void *)cuInit) {
    dlclose(h);
    return 0;
  }
  real_handle = h;
  for (unsigned i = 0; i < OMLC_SYMBOL_COUNT; i++) {
    void *f = dlsym(h, omlc_symbols[i].name);
    /* A function pointer through void *: POSIX guarantees dlsym's result converts. */
    memcpy(&real_fns[i], &f, sizeof f);
  }
  omlc_log("bypass mode: no openmps daemon at %s; every call goes to the driver %s", control_path,
           path);
  return 1;
}

/* Tries <dir>/libcuda.so.1, unless dir is this library's own directory. */
static int try_real_dir(const char *dir, const struct stat *own, const char *own_dir, int have_own) {
  if (dir[0] == '\0') return 0;
  char dir_resolved[PATH_MAX];
  if (realpath(dir, dir_resolved) == NULL) return 0;
  if (have_own && strcmp(dir_resolved, own_dir) == 0) return 0;
  char path[PATH_MAX];
  int n = snprintf(path, sizeof path, "%s/libcuda.so.1", dir_resolved);
  if (n < 0 || (size_t)n >= sizeof path) return 0;
  return try_real_file(path, own, have_own);
}

/* The real driver: OPENMPS_REAL_LIBCUDA when set ("none": there is none; otherwise the path of
 * the driver's libcuda.so.1), else LD_LIBRARY_PATH's entries, then the standard places the NVIDIA
 * driver installs libcuda.so.1 (distribution multiarch directories, the container toolkit's,
 * WSL's). */
static int find_real(void) {
  struct stat own;
  char own_dir[PATH_MAX] = "";
  int have_own = own_file(&own, own_dir, sizeof own_dir);
  const char *pinned = getenv("OPENMPS_REAL_LIBCUDA");
  if (pinned != NULL && pinned[0] != '\0') {
    if (strcmp(pinned, "none") == 0) return 0;
    if (try_real_file(pinned, &own, have_own)) return 1;
    omlc_log("OPENMPS_REAL_LIBCUDA=%s is not a CUDA driver other than this library", pinned);
    return 0;
  }
  const char *env = getenv("LD_LIBRARY_PATH");
  if (env != NULL) {
    char *copy = strdup(env);
    if (copy != NULL) {
      char *save = NULL;
      for (char *d = strtok_r(copy, ":", &save); d != NULL; d = strtok_r(NULL, ":", &save)) {
        if (try_real_dir(d, &own, own_dir, have_own)) {
          free(copy);
          return 1;
        }
      }
      free(copy);
    }
  }
  static const char *const standard[] = {
      "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
      "/lib/x86_64-linux-gnu",     "/lib/aarch64-linux-gnu",     "/lib64",     "/lib",
      "/usr/local/nvidia/lib64",   "/usr/local/nvidia/lib",      "/usr/lib/wsl/lib",
  };
  for (size_t i = 0; i < sizeof standard / sizeof standard[0]; i++) {
    if (try_real_dir(standard[i], &own, own_dir, have_own)) return 1;
  }
  return 0;
}

static void decide(void) {
  if (daemon_answers()) {
    mode = OMLC_MODE_MPS;
    omlc_log("MPS mode: the openmps daemon answers at %s", control_path);
  } else if (find_real()) {
    mode = OMLC_MODE_BYPASS;
  } else {
    mode = OMLC_MODE_NONE;
    omlc_log("no openmps daemon at %s and no real driver: calls fail with "
             "CUDA_ERROR_MPS_CONNECTION_FAILED",
             control_path);
  }
}

omlc_mode_t omlc_mode(void) {
  pthread_once(&mode_once, decide);
  return mode;
}

omlc_fn omlc_real(unsigned i) { return i < OMLC_SYMBOL_COUNT ? real_fns[i] : NULL; }

static atomic_uchar logged[OMLC_SYMBOL_COUNT];

CUresult omlc_bypass_missing(unsigned i) {
  if (i < OMLC_SYMBOL_COUNT && atomic_exchange(&logged[i], 1) == 0) {
    omlc_log("%s: the real driver has no such function (CUDA_ERROR_NOT_FOUND)", omlc_symbols[i].name);
  }
  return CUDA_ERROR_NOT_FOUND;
}

CUresult omlc_not_supported(unsigned i) {
  if (i < OMLC_SYMBOL_COUNT && atomic_exchange(&logged[i], 1) == 0) {
    omlc_log("%s: not implemented by openmps (CUDA_ERROR_NOT_SUPPORTED)", omlc_symbols[i].name);
  }
  return CUDA_ERROR_NOT_SUPPORTED;
}

CUresult omlc_no_service(void) { return CUDA_ERROR_MPS_CONNECTION_FAILED; }
