/* watchdog.c: the stuck-rank watchdog: a thread per rank that times each wait inside a
 * collective and ends the process when one outlasts the limit, after saying which ranks
 * on this node it waits for and in what state they are. Makes no MPI call from its thread. */
#define _GNU_SOURCE
#include "comm_internal.h"

#include "core/proc.h"

#include "dptrain/err.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <errno.h>
#include <signal.h>
#include <unistd.h>

/* Steps whose durations make the automatic limit (the median of the last ones). */
enum { WD_RING = 64, WD_MIN_STEPS = 8 };

static const char *const wd_kind_names[WD_N_KINDS] = {
    "an allreduce", "a broadcast", "a status agreement", "a maximum", "a barrier",
    "the bucketed gradient allreduce", "the gradient reduce-scatter",
    "the parameter allgather", "a gather of the optimizer state"};

/* One rank's progress, in memory shared by the ranks of a node: written by its owner only. */
typedef struct {
    _Atomic long seq;      /* collectives entered so far (the same sequence on every rank) */
    _Atomic int inside;    /* 1 while inside one */
    _Atomic int kind;      /* wd_kind of the current or last one */
    _Atomic double since;  /* CLOCK_MONOTONIC seconds when it entered */
    _Atomic long step;     /* last completed optimizer step (-1: none yet) */
    _Atomic double step_at;
    int rank, pid;
} wd_slot;

struct dp_watchdog {
    dp_watchdog_cfg cfg;
    MPI_Win win;
    wd_slot *slots; /* local_size slots, by node rank */
    wd_slot *mine;
    int node_rank, local_size;
    pthread_t thread;
    _Atomic int stop;
    /* The thread naps on this condition, so that stopping it wakes it at once (a plain
     * nanosleep kept every run's exit waiting up to a whole nap, 0.2 s). */
    pthread_mutex_t nap_mu;
    pthread_cond_t nap_cv;
    bool nap_ready; /* both initialized */
    _Atomic double ring[WD_RING]; /* durations of the last steps, seconds */
    _Atomic long n_steps;
    double last_step_at;           /* main thread only */
};

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of the last step durations, or 0 if too few steps have run. */
static double median_step(dp_watchdog *w)
{
    long n = atomic_load(&w->n_steps);
    if (n < WD_MIN_STEPS) {
        return 0.0;
    }
    int k = n < WD_RING ? (int)n : WD_RING;
    double v[WD_RING];
    for (int i = 0; i < k; i++) {
        v[i] = atomic_load(&w->ring[i]);
    }
    qsort(v, (size_t)k, sizeof v[0], cmp_double);
    return v[k / 2];
}

static double limit_of(dp_watchdog *w)
{
    if (w->cfg.timeout_s > 0) {
        return w->cfg.timeout_s;
    }
    double m = w->cfg.factor * median_step(w);
    return m > w->cfg.min_s ? m : w->cfg.min_s;
}

/* The state letter of a process ('?' if it cannot be read). */
static char proc_state(int pid)
{
    char st = '?';
    return dp_proc_stat(pid, &st, NULL) ? st : '?';
}

static const char *state_text(char s)
{
    switch (s) {
    case 'T':
    case 't':
        return "is stopped (SIGSTOP or a debugger)";
    case 'D':
        return "is in uninterruptible I/O (a hung file system or device?)";
    case 'Z':
    case 'X':
        return "has died";
    case '?':
        return "is gone";
    case 'R':
        return "is running but has not reached it (computing, or swapping)";
    default:
        return "is asleep outside the collective (blocked on I/O or a lock?)";
    }
}

/* Prints the report and ends the process. Runs in the watchdog thread. */
static void fire(dp_watchdog *w, double waited, double limit)
{
    char buf[8192];
    size_t len = 0;
    const wd_slot *me = w->mine;
    const long seq = atomic_load(&me->seq), step = atomic_load(&me->step);
    const double med = median_step(w), t = now_mono();
#define ADD(...)                                                                            \
    do {                                                                                    \
        if (len < sizeof buf) {                                                             \
            int n_ = snprintf(buf + len, sizeof buf - len, __VA_ARGS__);                    \
            len += n_ > 0 ? (size_t)n_ : 0;                                                 \
        }                                                                                   \
    } while (0)
    ADD("dptrain: rank %d: watchdog: waited %.1f s in %s after step %ld, longer than the "
        "limit of %.1f s (--step-timeout %s",
        me->rank, waited, wd_kind_names[atomic_load(&me->kind)], step, limit,
        w->cfg.timeout_s > 0 ? "" : "auto: ");
    if (w->cfg.timeout_s > 0) {
        ADD("%g", w->cfg.timeout_s);
    } else if (med > 0) {
        ADD("the larger of %g s and %g x the median step of %.3g ms", w->cfg.min_s,
            w->cfg.factor, med * 1e3);
    } else {
        ADD("%g s until %d steps have been timed", w->cfg.min_s, WD_MIN_STEPS);
    }
    ADD(")\n");
    int behind = 0;
    for (int k = 0; k < w->local_size; k++) {
        const wd_slot *p = &w->slots[k];
        if (p == me) {
            continue;
        }
        long pseq = atomic_load(&p->seq);
        const char st = proc_state(p->pid);
        const bool running = st == 'R' || st == 'S';
        if (running && (pseq > seq || (pseq == seq && atomic_load(&p->inside)))) {
            continue; /* waiting with us (a stopped rank inside the collective still holds it) */
        }
        behind++;
        long pstep = atomic_load(&p->step);
        ADD("dptrain: rank %d: watchdog: it waits for rank %d (pid %d, this node), which %s; "
            "its last step was %ld",
            me->rank, p->rank, p->pid, state_text(st), pstep);
        if (pstep >= 0) {
            ADD(", %.1f s ago", t - atomic_load(&p->step_at));
        }
        ADD("\n");
    }
    if (behind == 0) {
        ADD("dptrain: rank %d: watchdog: every rank on this node waits too: the rank it waits "
            "for runs on another node\n", me->rank);
    }
    ADD("dptrain: rank %d: watchdog: ending the job (exit %d); the newest checkpoint is "
        "intact: run the same command with --resume auto to continue\n",
        me->rank, w->cfg.exit_code);
#undef ADD
    if (len > sizeof buf) {
        len = sizeof buf;
    }
    fflush(stdout);
    for (size_t off = 0; off < len;) {
        ssize_t n = write(STDERR_FILENO, buf + off, len - off);
        if (n <= 0) {
            break;
        }
        off += (size_t)n;
    }
    _exit(w->cfg.exit_code);
}

static void *watch(void *arg)
{
    dp_watchdog *w = arg;
    double woke = now_mono(), awake_since = woke;
    while (!atomic_load(&w->stop)) {
        const double limit = limit_of(w);
        /* Wake a few times per limit, at most every 0.2 s: late by at most a tenth. */
        double nap = limit / 10 < 0.2 ? limit / 10 : 0.2;
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += (long)(nap * 1e9);
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        pthread_mutex_lock(&w->nap_mu);
        int e = 0; /* 0: woken (a stop, or spuriously: nap on); ETIMEDOUT or an error: up */
        while (!atomic_load(&w->stop) && e == 0) {
            e = pthread_cond_timedwait(&w->nap_cv, &w->nap_mu, &until);
        }
        pthread_mutex_unlock(&w->nap_mu);
        if (atomic_load(&w->stop)) {
            break;
        }
        const double t = now_mono();
        /* A nap far longer than asked means this process itself was stopped (SIGSTOP, a
         * suspended VM): its own wait says nothing about its peers, so it counts only from
         * the moment it runs again. */
        if (t - woke > nap + 1.0) {
            awake_since = t;
        }
        woke = t;
        if (atomic_load(&w->mine->inside)) {
            double since = atomic_load(&w->mine->since);
            double waited = t - (since > awake_since ? since : awake_since);
            if (waited > limit) {
                fire(w, t - since, limit);
            }
        }
    }
    return NULL;
}

int dp_watchdog_start(dp_comm *c, const dp_watchdog_cfg *cfg)
{
    int rc = DP_OK, node_rank = 0, err;
    dp_watchdog *w = NULL;
    if (cfg->timeout_s < 0 || c->wd) {
        return DP_OK;
    }
    if (!(cfg->timeout_s > 0 || (cfg->min_s > 0 && cfg->factor > 0)) ||
        !isfinite(cfg->timeout_s)) {
        return dp_err(DP_EINVAL, "watchdog: the limit must be positive");
    }
    DP_CALLOC(w, 1);
    w->cfg = *cfg;
    w->win = MPI_WIN_NULL;
    MPI_Comm_rank(c->node, &node_rank);
    w->node_rank = node_rank;
    w->local_size = c->local_size;
    wd_slot *base = NULL;
    MPI_Aint bytes = (MPI_Aint)sizeof(wd_slot) * (node_rank == 0 ? c->local_size : 0);
    if (MPI_Win_allocate_shared(bytes, (int)sizeof(wd_slot), MPI_INFO_NULL, c->node, &base,
                                &w->win) != MPI_SUCCESS) {
        DP_FAIL(DP_EMPI, "watchdog: MPI_Win_allocate_shared failed");
    }
    MPI_Aint qbytes = 0;
    int disp = 0;
    if (MPI_Win_shared_query(w->win, 0, &qbytes, &disp, &w->slots) != MPI_SUCCESS) {
        DP_FAIL(DP_EMPI, "watchdog: MPI_Win_shared_query failed");
    }
    w->mine = &w->slots[node_rank];
    atomic_store(&w->mine->seq, 0);
    atomic_store(&w->mine->inside, 0);
    atomic_store(&w->mine->kind, WD_ALLREDUCE);
    atomic_store(&w->mine->since, 0.0);
    atomic_store(&w->mine->step, -1);
    atomic_store(&w->mine->step_at, now_mono());
    w->mine->rank = c->rank;
    w->mine->pid = (int)getpid();
    w->last_step_at = now_mono();
    /* Every slot is filled before any rank can read one. */
    if (MPI_Barrier(c->node) != MPI_SUCCESS) {
        DP_FAIL(DP_EMPI, "watchdog: MPI_Barrier failed");
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&w->nap_mu, NULL);
    pthread_cond_init(&w->nap_cv, &ca);
    pthread_condattr_destroy(&ca);
    w->nap_ready = true;
    if ((err = pthread_create(&w->thread, NULL, watch, w)) != 0) {
        DP_FAIL(DP_EIO, "watchdog: cannot start its thread (%s)", strerror(err));
    }
    c->wd = w;
    w = NULL;
done:
    if (w) {
        if (w->nap_ready) {
            pthread_cond_destroy(&w->nap_cv);
            pthread_mutex_destroy(&w->nap_mu);
        }
        if (w->win != MPI_WIN_NULL) {
            MPI_Win_free(&w->win);
        }
        free(w);
    }
    return rc;
}

void dp_watchdog_stop(dp_comm *c)
{
    dp_watchdog *w = c ? c->wd : NULL;
    if (!w) {
        return;
    }
    pthread_mutex_lock(&w->nap_mu);
    atomic_store(&w->stop, 1);
    pthread_cond_signal(&w->nap_cv);
    pthread_mutex_unlock(&w->nap_mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->nap_cv);
    pthread_mutex_destroy(&w->nap_mu);
    c->wd = NULL;
    MPI_Win_free(&w->win);
    free(w);
}

void dp_wd_enter(const dp_comm *c, wd_kind kind)
{
    dp_watchdog *w = c->wd;
    if (w) {
        atomic_store(&w->mine->kind, (int)kind);
        atomic_store(&w->mine->since, now_mono());
        atomic_fetch_add(&w->mine->seq, 1);
        atomic_store(&w->mine->inside, 1);
    }
}

void dp_wd_leave(const dp_comm *c)
{
    if (c->wd) {
        atomic_store(&c->wd->mine->inside, 0);
    }
}

void dp_comm_step_done(const dp_comm *c, long step)
{
    dp_watchdog *w = c->wd;
    if (!w) {
        return;
    }
    const double t = now_mono();
    long n = atomic_load(&w->n_steps);
    atomic_store(&w->ring[n % WD_RING], t - w->last_step_at);
    atomic_store(&w->n_steps, n + 1);
    w->last_step_at = t;
    atomic_store(&w->mine->step, step);
    atomic_store(&w->mine->step_at, t);
}

double dp_watchdog_limit(const dp_comm *c)
{
    return c->wd ? limit_of(c->wd) : 0.0;
}

/* Appends the decimal digits of v to buf at *len (async-signal-safe). */
static void put_long(char *buf, size_t cap, size_t *len, long v)
{
    char d[24];
    int n = 0;
    unsigned long u = v < 0 ? (unsigned long)(-(v + 1)) + 1 : (unsigned long)v;
    do {
        d[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u && n < (int)sizeof d);
    if (v < 0 && *len < cap) {
        buf[(*len)++] = '-';
    }
    while (n > 0 && *len < cap) {
        buf[(*len)++] = d[--n];
    }
}

static void put_str(char *buf, size_t cap, size_t *len, const char *s)
{
    while (*s && *len < cap) {
        buf[(*len)++] = *s++;
    }
}

/* Whether process pid is gone or a zombie, with only async-signal-safe calls. */
static bool process_gone(int pid)
{
    if (kill((pid_t)pid, 0) != 0) {
        return errno == ESRCH;
    }
    char st = '?';
    return !dp_proc_stat(pid, &st, NULL) || st == 'Z' || st == 'X';
}

void dp_comm_report_lost_peers(const dp_comm *c)
{
    const dp_watchdog *w = c ? c->wd : NULL;
    if (!w) {
        return;
    }
    for (int k = 0; k < w->local_size; k++) {
        const wd_slot *p = &w->slots[k];
        if (p == w->mine || !process_gone(p->pid)) {
            continue;
        }
        char line[256];
        size_t len = 0;
        put_str(line, sizeof line, &len, "dptrain: rank ");
        put_long(line, sizeof line, &len, w->mine->rank);
        put_str(line, sizeof line, &len, ": rank ");
        put_long(line, sizeof line, &len, p->rank);
        put_str(line, sizeof line, &len, " (pid ");
        put_long(line, sizeof line, &len, p->pid);
        put_str(line, sizeof line, &len, ", this node) is gone: it was killed or crashed after "
                                         "step ");
        put_long(line, sizeof line, &len, atomic_load(&p->step));
        put_str(line, sizeof line, &len, "; the job ends\n");
        ssize_t wr = write(STDERR_FILENO, line, len);
        (void)wr;
    }
}
