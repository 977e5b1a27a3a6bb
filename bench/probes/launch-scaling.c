// launch-scaling: how cuLaunchKernel scales with host threads launching into one process.
//
// CUDA driver API only (no runtime, no NVRTC). An empty kernel (embedded PTX, sm_90) is launched
// K times by each of T threads (T = 1, 2, 4, 8, 12, 16), every thread on its own non-blocking
// stream, all released together by a barrier. Modes:
//
//   shared        one context (the device's primary context) current in every thread; the kernel
//                 from cuModuleLoadData + cuModuleGetFunction; streams from cuStreamCreate.
//   green         every thread its own green context (CUDA 12.4+) over the whole SM resource (or,
//                 GREEN_SPLIT=1, over one disjoint group of a cuDevSmResourceSplitByCount split),
//                 made current with cuCtxSetCurrent(cuCtxFromGreenCtx(...)); streams from
//                 cuGreenCtxStreamCreate; one library (cuLibraryLoadData + cuLibraryGetKernel) for
//                 all, a CUfunction per context from cuKernelGetFunction. This is the shape of the
//                 openmps server: one process, a green context per client.
//   green-kernel  (opt-in via MODES) as green, but launching the context-less CUkernel handle cast
//                 to CUfunction, as openmps's src/devices/cuda/cuda-module.ts does.
//   shared-kernel (opt-in via MODES) as shared, but launching the CUkernel handle.
//
// Timing (CLOCK_MONOTONIC), per run: t0 = the earliest barrier release over the threads;
// "launch phase" ends at the latest end of a thread's launch loop, "incl. sync" at the latest end
// of its cuStreamSynchronize. launches/s = T*K / time. "us per launch per thread" = the mean over
// threads of (own launch-loop time) / K: the CPU cost one cuLaunchKernel has for a thread while
// T threads launch. Each configuration runs REPEATS times; min/median/max are printed.
//
// Caveat: launches are asynchronous but the per-stream queue is finite. Once it is full (about a
// thousand pending launches; driver-dependent) cuLaunchKernel waits for the GPU, so with large K
// the launch phase can be bounded by the GPU's kernel throughput rather than by CPU cost. The
// detail lines also give the per-launch cost over the first EARLY launches (default 256) of each
// thread, taken before the queue can fill.
//
// Environment: LAUNCHES (K, default 20000), REPEATS (3), THREADS ("1,2,4,8,12,16"),
// MODES ("shared,green"; also shared-kernel, green-kernel), WARMUP (launches per thread before
// the barrier, 256), EARLY (256), GREEN_SPLIT (0), BUDGET_S (seconds of measurement before K is
// scaled down, 45), TIMEOUT_S (watchdog, 240).
//
// Never calls cuMulticastCreate, changes no device setting, allocates no memory on the device
// (the kernel's one 8-byte parameter is a plain 0).
#define _POSIX_C_SOURCE 200809L

#include <cuda.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64
#define MAX_CONFIGS 16
#define MAX_REPEATS 64

static const char PTX[] =
    ".version 8.0\n"
    ".target sm_90\n"
    ".address_size 64\n"
    "\n"
    ".visible .entry empty(\n"
    "    .param .u64 empty_param_0\n"
    ")\n"
    "{\n"
    "    ret;\n"
    "}\n";

static const char *err_name(CUresult rc) {
  const char *name = NULL;
  if (cuGetErrorName(rc, &name) != CUDA_SUCCESS || name == NULL) return "CUDA_ERROR_<unknown>";
  return name;
}

// Fatal: for the shared setup and for anything inside a measured run.
#define CHECK(call)                                                                        \
  do {                                                                                     \
    CUresult check_rc_ = (call);                                                           \
    if (check_rc_ != CUDA_SUCCESS) {                                                       \
      fprintf(stderr, "launch-scaling: %s failed: %s (%d) at %s:%d\n", #call,            \
              err_name(check_rc_), (int)check_rc_, __FILE__, __LINE__);                    \
      exit(1);                                                                             \
    }                                                                                      \
  } while (0)

// Soft: returns false from the enclosing function (a mode's setup), which then skips the mode.
#define TRY(call)                                                                          \
  do {                                                                                     \
    CUresult try_rc_ = (call);                                                             \
    if (try_rc_ != CUDA_SUCCESS) {                                                         \
      fprintf(stderr, "launch-scaling: %s failed: %s (%d): skipping this mode\n", #call,  \
              err_name(try_rc_), (int)try_rc_);                                            \
      return false;                                                                        \
    }                                                                                      \
  } while (0)

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static long env_long(const char *name, long dflt, long lo, long hi) {
  const char *v = getenv(name);
  if (v == NULL || *v == '\0') return dflt;
  char *end = NULL;
  long x = strtol(v, &end, 10);
  if (end == v || *end != '\0' || x < lo || x > hi) {
    fprintf(stderr, "launch-scaling: %s=%s is not an integer in [%ld, %ld]\n", name, v, lo, hi);
    exit(2);
  }
  return x;
}

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "launch-scaling: watchdog (TIMEOUT_S) expired, aborting\n";
  ssize_t w = write(2, msg, sizeof msg - 1);
  (void)w;
  _exit(3);
}

// ---------------------------------------------------------------------------------------------
// A mode: per thread slot, a context to make current, a stream in it and the function to launch.

typedef struct {
  const char *name;
  bool ready;
  CUcontext ctx[MAX_THREADS];
  CUstream stream[MAX_THREADS];
  CUfunction func[MAX_THREADS];
#if CUDA_VERSION >= 12040
  CUgreenCtx green[MAX_THREADS];
#endif
  int nslots;
} launch_mode;

static CUdevice g_dev;
static CUcontext g_primary;
static int g_max_threads;

static bool setup_shared(launch_mode *m, bool use_kernel, CUkernel kernel) {
  CUmodule mod;
  CUfunction f = NULL;
  TRY(cuCtxSetCurrent(g_primary));
  if (use_kernel) {
    f = (CUfunction)kernel;
  } else {
    TRY(cuModuleLoadData(&mod, PTX));
    TRY(cuModuleGetFunction(&f, mod, "empty"));
  }
  for (int i = 0; i < g_max_threads; i++) {
    m->ctx[i] = g_primary;
    m->func[i] = f;
    TRY(cuStreamCreate(&m->stream[i], CU_STREAM_NON_BLOCKING));
  }
  m->nslots = g_max_threads;
  return true;
}

static bool setup_green(launch_mode *m, bool use_kernel, CUkernel kernel, bool split) {
#if CUDA_VERSION >= 12040
  CUdevResource whole;
  memset(&whole, 0, sizeof whole);
  TRY(cuDeviceGetDevResource(g_dev, &whole, CU_DEV_RESOURCE_TYPE_SM));
  printf("# green: SM resource: smCount %u, minSmPartitionSize %u, smCoscheduledAlignment %u\n",
         whole.sm.smCount, whole.sm.minSmPartitionSize, whole.sm.smCoscheduledAlignment);

  static CUdevResource groups[MAX_THREADS];
  unsigned int ngroups = 0;
  if (split) {
    ngroups = (unsigned int)g_max_threads;
    unsigned int min_count = whole.sm.minSmPartitionSize;
    TRY(cuDevSmResourceSplitByCount(groups, &ngroups, &whole, NULL, 0, min_count));
    if (ngroups == 0) {
      fprintf(stderr, "launch-scaling: cuDevSmResourceSplitByCount made no group: skipping this mode\n");
      return false;
    }
    printf("# green: split into %u group(s) of %u SMs (asked %d of min %u); threads share groups "
           "round-robin when there are fewer\n", ngroups, groups[0].sm.smCount, g_max_threads,
           min_count);
  } else {
    printf("# green: every green context spans the whole SM resource (GREEN_SPLIT=0)\n");
  }

  for (int i = 0; i < g_max_threads; i++) {
    CUdevResourceDesc desc;
    CUdevResource *res = split ? &groups[(unsigned int)i % ngroups] : &whole;
    TRY(cuDevResourceGenerateDesc(&desc, res, 1));
    TRY(cuGreenCtxCreate(&m->green[i], desc, g_dev, CU_GREEN_CTX_DEFAULT_STREAM));
    TRY(cuCtxFromGreenCtx(&m->ctx[i], m->green[i]));
    TRY(cuCtxSetCurrent(m->ctx[i]));
    if (use_kernel) {
      m->func[i] = (CUfunction)kernel;
    } else {
      TRY(cuKernelGetFunction(&m->func[i], kernel));
    }
    TRY(cuGreenCtxStreamCreate(&m->stream[i], m->green[i], CU_STREAM_NON_BLOCKING, 0));
    m->nslots = i + 1;
  }
  // A launch into every context now, here, so that a mode that cannot run is skipped rather than
  // failing inside a measured run.
  for (int i = 0; i < g_max_threads; i++) {
    unsigned long long p = 0;
    void *args[] = {&p};
    TRY(cuCtxSetCurrent(m->ctx[i]));
    TRY(cuLaunchKernel(m->func[i], 1, 1, 1, 32, 1, 1, 0, m->stream[i], args, NULL));
    TRY(cuStreamSynchronize(m->stream[i]));
  }
  TRY(cuCtxSetCurrent(g_primary));
  return true;
#else
  (void)m; (void)use_kernel; (void)kernel; (void)split;
  fprintf(stderr, "launch-scaling: built against CUDA %d, no green contexts (12.4+): skipping\n",
          CUDA_VERSION);
  return false;
#endif
}

static void teardown(launch_mode *m) {
  for (int i = 0; i < MAX_THREADS; i++) {
    if (m->stream[i] != NULL) {
      cuCtxSetCurrent(m->ctx[i]);
      cuStreamDestroy(m->stream[i]);
      m->stream[i] = NULL;
    }
#if CUDA_VERSION >= 12040
    if (m->green[i] != NULL) {
      cuGreenCtxDestroy(m->green[i]);
      m->green[i] = NULL;
    }
#endif
  }
  cuCtxSetCurrent(g_primary);
}

// ---------------------------------------------------------------------------------------------
// One measured run.

typedef struct {
  CUcontext ctx;
  CUstream stream;
  CUfunction func;
  long k, warmup, early;
  pthread_barrier_t *barrier;
  double t_start, t_early, t_launched, t_synced;
} worker_t;

static void *worker(void *arg) {
  worker_t *w = arg;
  unsigned long long p = 0;
  void *args[] = {&p};
  CHECK(cuCtxSetCurrent(w->ctx));
  for (long i = 0; i < w->warmup; i++)
    CHECK(cuLaunchKernel(w->func, 1, 1, 1, 32, 1, 1, 0, w->stream, args, NULL));
  CHECK(cuStreamSynchronize(w->stream));

  pthread_barrier_wait(w->barrier);
  w->t_start = now_s();
  w->t_early = w->t_start;
  for (long i = 0; i < w->k; i++) {
    CHECK(cuLaunchKernel(w->func, 1, 1, 1, 32, 1, 1, 0, w->stream, args, NULL));
    if (i + 1 == w->early) w->t_early = now_s();
  }
  w->t_launched = now_s();
  CHECK(cuStreamSynchronize(w->stream));
  w->t_synced = now_s();
  return NULL;
}

typedef struct {
  double rate_launch, rate_sync, us_per_launch, us_early, seconds;
} result_t;

static result_t run_once(const launch_mode *m, int threads, long k, long warmup, long early) {
  static worker_t w[MAX_THREADS];
  pthread_t tid[MAX_THREADS];
  pthread_barrier_t barrier;
  if (pthread_barrier_init(&barrier, NULL, (unsigned)threads) != 0) {
    perror("pthread_barrier_init");
    exit(1);
  }
  for (int i = 0; i < threads; i++) {
    memset(&w[i], 0, sizeof w[i]);
    w[i].ctx = m->ctx[i];
    w[i].stream = m->stream[i];
    w[i].func = m->func[i];
    w[i].k = k;
    w[i].warmup = warmup;
    w[i].early = early < k ? early : k;
    w[i].barrier = &barrier;
  }
  for (int i = 0; i < threads; i++) {
    int rc = pthread_create(&tid[i], NULL, worker, &w[i]);
    if (rc != 0) {
      fprintf(stderr, "launch-scaling: pthread_create: %s\n", strerror(rc));
      exit(1);
    }
  }
  for (int i = 0; i < threads; i++) pthread_join(tid[i], NULL);
  pthread_barrier_destroy(&barrier);

  double t0 = w[0].t_start, t_l = w[0].t_launched, t_s = w[0].t_synced, per = 0, per_early = 0;
  for (int i = 0; i < threads; i++) {
    if (w[i].t_start < t0) t0 = w[i].t_start;
    if (w[i].t_launched > t_l) t_l = w[i].t_launched;
    if (w[i].t_synced > t_s) t_s = w[i].t_synced;
    per += (w[i].t_launched - w[i].t_start) / (double)k;
    per_early += (w[i].t_early - w[i].t_start) / (double)w[i].early;
  }
  result_t r;
  double total = (double)threads * (double)k;
  r.rate_launch = total / (t_l - t0);
  r.rate_sync = total / (t_s - t0);
  r.us_per_launch = per / threads * 1e6;
  r.us_early = per_early / threads * 1e6;
  r.seconds = t_s - t0;
  return r;
}

// ---------------------------------------------------------------------------------------------

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

typedef struct {
  double min, med, max;
} stats_t;

static stats_t stats(const double *v, int n) {
  double s[MAX_REPEATS];
  memcpy(s, v, sizeof(double) * (size_t)n);
  qsort(s, (size_t)n, sizeof(double), cmp_double);
  stats_t r = {s[0], n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2, s[n - 1]};
  return r;
}

typedef struct {
  int threads;
  const char *mode;
  long k;
  int n;
  stats_t launch, sync, us, early;
} row_t;

static int parse_threads(int *out) {
  const char *v = getenv("THREADS");
  if (v == NULL || *v == '\0') v = "1,2,4,8,12,16";
  char buf[256];
  snprintf(buf, sizeof buf, "%s", v);
  int n = 0;
  for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    char *end = NULL;
    long t = strtol(tok, &end, 10);
    if (end == tok || *end != '\0' || t < 1 || t > MAX_THREADS || n == MAX_CONFIGS) {
      fprintf(stderr, "launch-scaling: THREADS=%s: want up to %d counts in [1, %d]\n", v,
              MAX_CONFIGS, MAX_THREADS);
      exit(2);
    }
    out[n++] = (int)t;
  }
  return n;
}

int main(void) {
  long k_default = env_long("LAUNCHES", 20000, 1, 100000000);
  int repeats = (int)env_long("REPEATS", 3, 1, MAX_REPEATS);
  long warmup = env_long("WARMUP", 256, 0, 1000000);
  long early = env_long("EARLY", 256, 1, 1000000);
  bool split = env_long("GREEN_SPLIT", 0, 0, 1) != 0;
  double budget = (double)env_long("BUDGET_S", 45, 1, 86400);
  long timeout = env_long("TIMEOUT_S", 240, 0, 86400);
  const char *modes_env = getenv("MODES");
  if (modes_env == NULL || *modes_env == '\0') modes_env = "shared,green";

  int tcounts[MAX_CONFIGS];
  int ntc = parse_threads(tcounts);
  g_max_threads = 1;
  for (int i = 0; i < ntc; i++)
    if (tcounts[i] > g_max_threads) g_max_threads = tcounts[i];

  if (timeout > 0) {
    signal(SIGALRM, on_alarm);
    alarm((unsigned)timeout);
  }
  setvbuf(stdout, NULL, _IOLBF, 0);

  CHECK(cuInit(0));
  CHECK(cuDeviceGet(&g_dev, 0));
  char name[256] = {0};
  int drv = 0, sms = 0, ccmaj = 0, ccmin = 0;
  CHECK(cuDeviceGetName(name, (int)sizeof name - 1, g_dev));
  CHECK(cuDriverGetVersion(&drv));
  CHECK(cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, g_dev));
  CHECK(cuDeviceGetAttribute(&ccmaj, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, g_dev));
  CHECK(cuDeviceGetAttribute(&ccmin, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, g_dev));
  const char *conns = getenv("CUDA_DEVICE_MAX_CONNECTIONS");
  printf("# launch-scaling: %s, sm_%d%d, %d SMs, driver API %d (built against %d), %ld online CPUs\n",
         name, ccmaj, ccmin, sms, drv, CUDA_VERSION, sysconf(_SC_NPROCESSORS_ONLN));
  printf("# LAUNCHES=%ld REPEATS=%d WARMUP=%ld EARLY=%ld MODES=%s GREEN_SPLIT=%d BUDGET_S=%.0f "
         "CUDA_DEVICE_MAX_CONNECTIONS=%s\n", k_default, repeats, warmup, early, modes_env,
         split ? 1 : 0, budget, conns ? conns : "(unset)");
  printf("# kernel: empty PTX entry, grid 1, block 32, one 8-byte parameter\n");

  CHECK(cuDevicePrimaryCtxRetain(&g_primary, g_dev));
  CHECK(cuCtxSetCurrent(g_primary));

  // One library for the CUkernel-based modes; loaded lazily, only if such a mode is asked for.
  CUlibrary lib = NULL;
  CUkernel kernel = NULL;
  bool lib_ok = false, lib_tried = false;

  static row_t rows[4 * MAX_CONFIGS];
  int nrows = 0;
  double t_begin = now_s();
  char mbuf[256];
  snprintf(mbuf, sizeof mbuf, "%s", modes_env);
  // Count the runs ahead, for the budget.
  int nmodes = 0;
  for (const char *c = mbuf; *c; c++) nmodes += (*c == ',');
  nmodes += 1;
  long sum_threads = 0;
  for (int i = 0; i < ntc; i++) sum_threads += tcounts[i];
  double launches_left = (double)nmodes * (double)repeats * (double)sum_threads * (double)k_default;
  double rate_est = 0;  // last measured incl.-sync aggregate rate (launches/s), any mode

  for (char *save = NULL, *mode = strtok_r(mbuf, ",", &save); mode; mode = strtok_r(NULL, ",", &save)) {
    static launch_mode m;
    memset(&m, 0, sizeof m);
    m.name = mode;
    bool is_green = strncmp(mode, "green", 5) == 0;
    bool use_kernel = strcmp(mode, "green-kernel") == 0 || strcmp(mode, "shared-kernel") == 0;
    if (strcmp(mode, "shared") != 0 && strcmp(mode, "green") != 0 && !use_kernel) {
      fprintf(stderr, "launch-scaling: unknown mode %s (shared, green, shared-kernel, green-kernel)\n", mode);
      exit(2);
    }
    if ((is_green || use_kernel) && !lib_tried) {
      lib_tried = true;
      CUresult rc = cuLibraryLoadData(&lib, PTX, NULL, NULL, 0, NULL, NULL, 0);
      if (rc == CUDA_SUCCESS) rc = cuLibraryGetKernel(&kernel, lib, "empty");
      if (rc != CUDA_SUCCESS)
        fprintf(stderr, "launch-scaling: cuLibraryLoadData/cuLibraryGetKernel failed: %s (%d)\n",
                err_name(rc), (int)rc);
      lib_ok = rc == CUDA_SUCCESS;
    }
    double t_setup = now_s();
    bool ok;
    if ((is_green || use_kernel) && !lib_ok) ok = false;
    else if (is_green) ok = setup_green(&m, use_kernel, kernel, split);
    else ok = setup_shared(&m, use_kernel, kernel);
    if (!ok) {
      printf("# mode %s: skipped (setup failed, see stderr)\n", mode);
      teardown(&m);
      launches_left -= (double)repeats * (double)sum_threads * (double)k_default;
      continue;
    }
    printf("# mode %s: set up %d slot(s) in %.1f ms\n", mode, m.nslots, (now_s() - t_setup) * 1e3);

    for (int c = 0; c < ntc; c++) {
      int t = tcounts[c];
      long k = k_default;
      double left = budget - (now_s() - t_begin);
      if (rate_est > 0 && launches_left > 0) {
        // Share what is left of the budget in proportion to the launches still planned.
        double planned = (double)repeats * t * (double)k_default;
        double allowed_s = left > 0 ? left * planned / launches_left : 0;
        double k_fit = allowed_s * rate_est / ((double)repeats * t);
        long floor_k = k_default < 1000 ? k_default : 1000;
        if (k_fit < (double)k) {
          k = k_fit < (double)floor_k ? floor_k : (long)k_fit;
          printf("# %s T=%d: K scaled down to %ld to stay within BUDGET_S\n", mode, t, k);
        }
      }
      launches_left -= (double)repeats * t * (double)k_default;

      double v_l[MAX_REPEATS], v_s[MAX_REPEATS], v_u[MAX_REPEATS], v_e[MAX_REPEATS];
      for (int r = 0; r < repeats; r++) {
        result_t res = run_once(&m, t, k, warmup, early);
        v_l[r] = res.rate_launch;
        v_s[r] = res.rate_sync;
        v_u[r] = res.us_per_launch;
        v_e[r] = res.us_early;
        rate_est = res.rate_sync;
        printf("%-13s T=%2d K=%-6ld rep %d: launch %10.0f/s  incl.sync %10.0f/s  %7.3f us/launch/thread"
               "  (first %ld: %7.3f us)  %.3f s\n", mode, t, k, r + 1, res.rate_launch,
               res.rate_sync, res.us_per_launch, early < k ? early : k, res.us_early, res.seconds);
      }
      row_t *row = &rows[nrows++];
      row->threads = t;
      row->mode = mode;
      row->k = k;
      row->n = repeats;
      row->launch = stats(v_l, repeats);
      row->sync = stats(v_s, repeats);
      row->us = stats(v_u, repeats);
      row->early = stats(v_e, repeats);
    }
    teardown(&m);
  }
  if (lib != NULL) cuLibraryUnload(lib);
  cuCtxSetCurrent(NULL);
  cuDevicePrimaryCtxRelease(g_dev);

  printf("\n# total %.1f s\n\n", now_s() - t_begin);
  printf("Spread over %d repeat(s) (min / median / max):\n\n", repeats);
  printf("| threads | mode | K per thread | launches/s (launch phase) | launches/s (incl. sync) | "
         "us per launch per thread | us per launch, first %ld |\n", early);
  printf("|---:|---|---:|---|---|---|---|\n");
  for (int i = 0; i < nrows; i++) {
    const row_t *r = &rows[i];
    printf("| %d | %s | %ld | %.0f / %.0f / %.0f | %.0f / %.0f / %.0f | %.3f / %.3f / %.3f | "
           "%.3f / %.3f / %.3f |\n", r->threads, r->mode, r->k, r->launch.min, r->launch.med,
           r->launch.max, r->sync.min, r->sync.med, r->sync.max, r->us.min, r->us.med, r->us.max,
           r->early.min, r->early.med, r->early.max);
  }
  printf("\nMedians:\n\n");
  printf("| threads | mode | launches/s (launch phase) | launches/s (incl. sync) | us per launch per thread |\n");
  printf("|---:|---|---:|---:|---:|\n");
  for (int i = 0; i < nrows; i++) {
    const row_t *r = &rows[i];
    printf("| %d | %s | %.0f | %.0f | %.3f |\n", r->threads, r->mode, r->launch.med, r->sync.med,
           r->us.med);
  }
  return 0;
}
