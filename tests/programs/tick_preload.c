/* tick_preload: an LD_PRELOAD library that puts a periodic timer signal into any
 * dynamically linked program and measures, inside the program, how late each
 * tick's handler runs.
 *
 *   gcc -O2 -shared -fPIC -o tick_preload.so tick_preload.c [-m32] [-lrt]
 *   MVEE_TICK_HZ=1000 MVEE_TICK_OUT=/tmp/ticks.bin LD_PRELOAD=./tick_preload.so gzip -9c big > /dev/null
 *
 * Environment:
 *   MVEE_TICK_HZ   timer frequency (default 1000; 0 or unset MVEE_TICK_OUT: do nothing)
 *   MVEE_TICK_OUT  results file (created if missing; it should be empty or absent)
 *
 * The constructor installs a counting SIGALRM handler (SA_SIGINFO | SA_RESTART)
 * and arms a POSIX timer on CLOCK_MONOTONIC with an absolute first expiry on a
 * grid of whole periods (TIMER_ABSTIME): expiry k is at first_ns + k * period_ns
 * exactly. As CLOCK_MONOTONIC is system-wide, variants of one program under a
 * monitor tick at the same instants whatever their start skew.
 *
 * The delay of a delivery is handler entry (clock_gettime: the vDSO natively; under
 * mvee, which hides the vDSO so that the variants share one view of time, a
 * synchronised syscall, part of what a tick costs there) minus the scheduled time
 * of the oldest expiry not yet accounted for. The handler makes no other syscall:
 * timer_getoverrun would be one, and under a monitor each
 * syscall in a handler is a rendezvous of all variants, which is not what this
 * measures. Instead the expiry index comes from the clock:
 *   k_now  = the latest expiry at or before handler entry, floor((now - first) / period);
 *   k      = next_k (the oldest unaccounted expiry), or k_now if next_k is in the future
 *            (the signal of an expiry an earlier, late handler already accounted for);
 *   delay  = now - (first + k * period); then next_k = k_now + 1.
 * So a late handler accounts for every expiry up to its entry; expiries that
 * coalesced into one delivery (kernel overruns, or a monitor merging held signals)
 * are "lost" ticks: expired - handled at the end. si_overrun from the siginfo is
 * summed separately (the kernel's own count of coalesced expiries).
 *
 * Results go to a MAP_SHARED mapping of MVEE_TICK_OUT, with plain stores, never a
 * write(): under an MVEE the variants' numbers differ, and a write() with
 * different buffers would be a divergence alarm; open/ftruncate/mmap are the same
 * calls in every variant. Every process mapping the file claims its own slot with
 * an atomic increment in the shared header, so each variant of an MVEE run
 * reports its own view (slots are claimed in whatever order the constructors run).
 * Delay samples are kept in a per-slot reservoir (Algorithm R, fixed-seed
 * xorshift: no syscall); count, sum and max are exact.
 *
 * File layout (little-endian, see benchmarks/bench_signals.py):
 *   header: u32 magic "MVTK", u32 version, u32 slots claimed, u32 slot count,
 *           u32 reservoir capacity, u32 slot size, then zero padding to 64 bytes
 *   slot:   struct tick_slot below, then capacity u64 samples (ns)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define TICK_MAGIC 0x4b54564du /* "MVTK" */
#define TICK_VERSION 1u
#define TICK_SLOTS 16u
#define TICK_CAPACITY 16384u
#define TICK_SIGNAL SIGALRM

struct tick_header {
    uint32_t magic, version, claimed, slots, capacity, slot_size;
    uint8_t pad[40];
};

struct tick_slot {
    uint32_t state; /* 1 running, 2 finished */
    uint32_t hz;
    uint64_t period_ns;
    uint64_t first_ns;    /* scheduled time of expiry 0 */
    uint64_t end_ns;      /* when the destructor ran */
    uint64_t handled;     /* handler runs */
    uint64_t expired;     /* expiries up to end_ns */
    uint64_t sum_ns;      /* sum of delays */
    uint64_t max_ns;
    uint64_t overruns;    /* sum of si_overrun */
    uint64_t other;       /* deliveries not from the timer (si_code != SI_TIMER) */
    uint64_t stored;      /* samples in the reservoir: min(handled, capacity) */
    uint64_t reserved[5];
};

_Static_assert(sizeof(struct tick_header) == 64, "header layout");
_Static_assert(sizeof(struct tick_slot) == 128, "slot layout");

#define SLOT_BYTES (sizeof(struct tick_slot) + TICK_CAPACITY * sizeof(uint64_t))
#define FILE_BYTES (sizeof(struct tick_header) + TICK_SLOTS * SLOT_BYTES)

static struct tick_slot *slot;
static uint64_t *samples;
static uint64_t next_k;
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static timer_t timer;
static int armed;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t xorshift(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void on_tick(int signum, siginfo_t *info, void *context) {
    (void)signum;
    (void)context;
    uint64_t now = now_ns();
    if (info && info->si_code == SI_TIMER)
        slot->overruns += (uint64_t)(info->si_overrun > 0 ? info->si_overrun : 0);
    else
        slot->other++;
    if (now < slot->first_ns)
        return; /* cannot happen for a timer signal; an outside SIGALRM is only counted */
    uint64_t k_now = (now - slot->first_ns) / slot->period_ns;
    uint64_t k = next_k <= k_now ? next_k : k_now;
    uint64_t delay = now - (slot->first_ns + k * slot->period_ns);
    next_k = k_now + 1;
    uint64_t index = slot->handled++;
    slot->sum_ns += delay;
    if (delay > slot->max_ns)
        slot->max_ns = delay;
    if (index < TICK_CAPACITY) {
        samples[index] = delay;
        slot->stored = index + 1;
    } else {
        uint64_t j = xorshift() % (index + 1);
        if (j < TICK_CAPACITY)
            samples[j] = delay;
    }
}

static struct tick_header *map_results(const char *path) {
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return NULL;
    struct tick_header *header = NULL;
    if (ftruncate(fd, (off_t)FILE_BYTES) == 0) {
        void *map = mmap(NULL, FILE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (map != MAP_FAILED)
            header = map;
    }
    close(fd);
    return header;
}

__attribute__((constructor)) static void tick_start(void) {
    const char *out = getenv("MVEE_TICK_OUT");
    const char *hz_text = getenv("MVEE_TICK_HZ");
    long hz = hz_text ? atol(hz_text) : 1000;
    if (!out || hz <= 0 || hz > 1000000)
        return;
    struct tick_header *header = map_results(out);
    if (!header)
        return;
    /* Every process writes the same header values; the slot claim is atomic. */
    header->version = TICK_VERSION;
    header->slots = TICK_SLOTS;
    header->capacity = TICK_CAPACITY;
    header->slot_size = (uint32_t)SLOT_BYTES;
    __atomic_store_n(&header->magic, TICK_MAGIC, __ATOMIC_RELEASE);
    uint32_t index = __atomic_fetch_add(&header->claimed, 1, __ATOMIC_ACQ_REL);
    if (index >= TICK_SLOTS)
        return;
    slot = (struct tick_slot *)((char *)(header + 1) + (size_t)index * SLOT_BYTES);
    samples = (uint64_t *)(slot + 1);
    slot->hz = (uint32_t)hz;
    slot->period_ns = 1000000000ull / (uint64_t)hz;

    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_tick;
    action.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&action.sa_mask);
    if (sigaction(TICK_SIGNAL, &action, NULL) != 0)
        return;

    struct sigevent event;
    memset(&event, 0, sizeof event);
    event.sigev_notify = SIGEV_SIGNAL;
    event.sigev_signo = TICK_SIGNAL;
    if (timer_create(CLOCK_MONOTONIC, &event, &timer) != 0)
        return;
    /* First expiry on the period grid, one to two periods from now. */
    uint64_t period = slot->period_ns;
    slot->first_ns = (now_ns() / period + 2) * period;
    struct itimerspec spec;
    spec.it_value.tv_sec = (time_t)(slot->first_ns / 1000000000ull);
    spec.it_value.tv_nsec = (long)(slot->first_ns % 1000000000ull);
    spec.it_interval.tv_sec = (time_t)(period / 1000000000ull);
    spec.it_interval.tv_nsec = (long)(period % 1000000000ull);
    slot->state = 1;
    if (timer_settime(timer, TIMER_ABSTIME, &spec, NULL) != 0) {
        slot->state = 0;
        return;
    }
    armed = 1;
}

__attribute__((destructor)) static void tick_stop(void) {
    if (!armed)
        return;
    sigset_t tick_only;
    sigemptyset(&tick_only);
    sigaddset(&tick_only, TICK_SIGNAL);
    sigprocmask(SIG_BLOCK, &tick_only, NULL);
    timer_delete(timer);
    armed = 0;
    uint64_t end = now_ns();
    slot->end_ns = end;
    slot->expired = end >= slot->first_ns ? (end - slot->first_ns) / slot->period_ns + 1 : 0;
    __atomic_store_n(&slot->state, 2, __ATOMIC_RELEASE);
}
