/* The lock agent: preloaded into every variant (LD_PRELOAD), it makes the followers'
 * threads take the leader's lock order (docs/architecture.md, "Lock-order recording
 * and replay"). After GHUMVEE's total-order synchronisation agent.
 *
 * One log per run, which the monitor holds (MVEE_LOCK_AGENT=NN:PATH; the monitor writes
 * the variant's index NN at every exec stop), mapped by every process of every variant.
 * The leader (variant 0) appends one entry per operation on a mutex, condition variable
 * or semaphore: (the thread's key, the operation, its result), in the order its threads
 * performed them, under one lock shared by its processes. Non-blocking operations run
 * inside that lock with their entry; a blocking acquisition is entered after it
 * succeeded. A follower keeps one cursor per variant: a thread waits until the entry at
 * the cursor names it, returns the leader's result without touching the object, and
 * moves the cursor on. A thread's key is its TID as every variant sees it (gettid: the
 * leader's).
 *
 * Built by the monitor (mvee/lock_agent.py) for x86_64 and i386.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <semaphore.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x4d4c4f47u /* "MLOG", as mvee/lock_agent.py writes it */
#define MAX_VARIANTS 16
#define VARIABLE "MVEE_LOCK_AGENT="
#define SPINS 200

struct header {  /* mvee/lock_agent.py: HEADER */
    uint32_t magic, variants, capacity, entries_at;
    uint32_t glock;    /* the leader's lock around an operation and its entry */
    uint32_t head;     /* entries the leader wrote */
    uint32_t cursor[MAX_VARIANTS];  /* entries each follower replayed */
    uint32_t bell[MAX_VARIANTS];    /* futex words: rung when the cursor or the head moves */
    uint32_t waiters[MAX_VARIANTS];
    uint32_t attached[MAX_VARIANTS];  /* processes that mapped the log */
};

struct entry {
    uint32_t seq;  /* position + 1 once written */
    uint32_t key;
    uint32_t op;
    int32_t result;
};

enum { OP_LOCK = 1, OP_UNLOCK, OP_COND_RELEASE, OP_COND_REACQUIRE, OP_SEM_WAIT, OP_SEM_POST,
       OP_SEM_VALUE, OP_FORK };

static int variant = -1;  /* -1: not under the monitor's agent (or it failed): pass through */
static char log_path[PATH_MAX];
static char agent_variable[sizeof(VARIABLE) + 3 + PATH_MAX];  /* with index "00" */
static char preload_entry[PATH_MAX];  /* the agent's own element of LD_PRELOAD */
static volatile int initialised;  /* 0 not yet, 1 mapped, -1 failed */
static struct header *log_header;
static struct entry *entries;
static __thread uint32_t thread_key;

#define REAL(name) static __typeof__(name) *real_##name
REAL(pthread_mutex_lock); REAL(pthread_mutex_trylock); REAL(pthread_mutex_timedlock);
REAL(pthread_mutex_unlock); REAL(pthread_cond_wait); REAL(pthread_cond_timedwait);
REAL(pthread_cond_signal); REAL(pthread_cond_broadcast);
REAL(pthread_create); REAL(sem_wait); REAL(sem_trywait); REAL(sem_timedwait);
REAL(sem_clockwait); REAL(sem_post); REAL(sem_getvalue); REAL(execve); REAL(execvpe);
REAL(fexecve); REAL(posix_spawn); REAL(posix_spawnp);

static void resolve(void) {
#define FIND(name) real_##name = (__typeof__(real_##name))dlsym(RTLD_NEXT, #name)
    FIND(pthread_mutex_lock); FIND(pthread_mutex_trylock); FIND(pthread_mutex_timedlock);
    FIND(pthread_mutex_unlock); FIND(pthread_create); FIND(sem_wait); FIND(sem_trywait);
    FIND(sem_timedwait); FIND(sem_clockwait); FIND(sem_post); FIND(sem_getvalue); FIND(execve);
    FIND(execvpe); FIND(fexecve); FIND(posix_spawn); FIND(posix_spawnp);
    /* the current condition variables, not the 2.2.5 compatibility ones */
    real_pthread_cond_wait = dlvsym(RTLD_NEXT, "pthread_cond_wait", "GLIBC_2.3.2");
    real_pthread_cond_timedwait = dlvsym(RTLD_NEXT, "pthread_cond_timedwait", "GLIBC_2.3.2");
    real_pthread_cond_signal = dlvsym(RTLD_NEXT, "pthread_cond_signal", "GLIBC_2.3.2");
    real_pthread_cond_broadcast = dlvsym(RTLD_NEXT, "pthread_cond_broadcast", "GLIBC_2.3.2");
    if (!real_pthread_cond_wait) {
        FIND(pthread_cond_wait); FIND(pthread_cond_timedwait); FIND(pthread_cond_signal);
        FIND(pthread_cond_broadcast);
    }
#undef FIND
}

/* --- futexes on the shared log (not private: the log is shared between processes) --- */

static void futex_wait(uint32_t *word, uint32_t seen) {
    syscall(SYS_futex, word, FUTEX_WAIT, seen, NULL, NULL, 0);
}

static void futex_wake(uint32_t *word) {
    syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static void ring(int who) {
    if (__atomic_load_n(&log_header->waiters[who], __ATOMIC_SEQ_CST)) {
        __atomic_add_fetch(&log_header->bell[who], 1, __ATOMIC_SEQ_CST);
        futex_wake(&log_header->bell[who]);
    }
}

/* Wait until ready() holds; the bell of `who` rings when it may have changed. */
static void wait_until(int who, int (*ready)(void *), void *context) {
    for (int spin = 0; !ready(context); spin++) {
        if (spin < SPINS) {
            __builtin_ia32_pause();
            continue;
        }
        __atomic_add_fetch(&log_header->waiters[who], 1, __ATOMIC_SEQ_CST);
        uint32_t seen = __atomic_load_n(&log_header->bell[who], __ATOMIC_SEQ_CST);
        if (!ready(context))
            futex_wait(&log_header->bell[who], seen);
        __atomic_sub_fetch(&log_header->waiters[who], 1, __ATOMIC_SEQ_CST);
    }
}

/* --- the leader's lock: 0 free, 1 taken, 2 taken with waiters (Drepper's mutex) --- */

static void leader_lock(void) {
    uint32_t *word = &log_header->glock, expected = 0;
    if (__atomic_compare_exchange_n(word, &expected, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return;
    if (expected != 2)
        expected = __atomic_exchange_n(word, 2, __ATOMIC_ACQUIRE);
    while (expected != 0) {
        futex_wait(word, 2);
        expected = __atomic_exchange_n(word, 2, __ATOMIC_ACQUIRE);
    }
}

static void leader_unlock(void) {
    if (__atomic_exchange_n(&log_header->glock, 0, __ATOMIC_RELEASE) == 2)
        futex_wake(&log_header->glock);
}

/* --- the process's state --- */

static void attach(void) {
    int fd = open(log_path, O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
        struct header *header = mmap(NULL, sizeof *header, PROT_READ, MAP_SHARED, fd, 0);
        if (header != MAP_FAILED && header->magic == MAGIC && (uint32_t)variant < header->variants) {
            size_t size = header->entries_at + (size_t)header->capacity * sizeof(struct entry);
            munmap(header, sizeof *header);
            header = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (header != MAP_FAILED) {
                log_header = header;
                entries = (struct entry *)((char *)header + header->entries_at);
                __atomic_add_fetch(&header->attached[variant], 1, __ATOMIC_SEQ_CST);
            }
        } else if (header != MAP_FAILED) {
            munmap(header, sizeof *header);
        }
        close(fd);
    }
    initialised = log_header ? 1 : -1;
}

/* Whether this operation is ordered. The log is mapped at a process's first operation
 * or thread creation: while it has one thread, at the same point in every variant. */
static int active(void) {
    if (variant < 0)
        return 0;
    if (!initialised)
        attach();
    if (initialised < 0)
        return 0;
    if (!thread_key)
        thread_key = (uint32_t)syscall(SYS_gettid);
    return 1;
}

/* --- the leader: an entry per operation, written with the leader's lock held --- */

static uint32_t free_space(void) {
    uint32_t head = log_header->head, oldest = head;
    for (uint32_t v = 1; v < log_header->variants; v++) {
        uint32_t cursor = __atomic_load_n(&log_header->cursor[v], __ATOMIC_SEQ_CST);
        if (head - cursor > head - oldest)
            oldest = cursor;
    }
    return log_header->capacity - (head - oldest);
}

static int has_space(void *unused) {
    (void)unused;
    return free_space() > 0;
}

static void append(uint32_t op, int32_t result) {
    wait_until(0, has_space, NULL);
    uint32_t head = log_header->head;
    struct entry *entry = &entries[head % log_header->capacity];
    entry->key = thread_key;
    entry->op = op;
    entry->result = result;
    __atomic_store_n(&entry->seq, head + 1, __ATOMIC_RELEASE);
    __atomic_store_n(&log_header->head, head + 1, __ATOMIC_SEQ_CST);
    for (uint32_t v = 1; v < log_header->variants; v++)
        ring((int)v);
}

static void record(uint32_t op, int32_t result) {
    leader_lock();
    append(op, result);
    leader_unlock();
}

/* --- a follower: wait for the entry, act, move the cursor on --- */

static int my_turn(void *context) {
    uint32_t cursor = __atomic_load_n(&log_header->cursor[variant], __ATOMIC_SEQ_CST);
    struct entry *entry = &entries[cursor % log_header->capacity];
    if (__atomic_load_n(&entry->seq, __ATOMIC_ACQUIRE) != cursor + 1 || entry->key != thread_key)
        return 0;
    *(struct entry **)context = entry;
    return 1;
}

static int32_t await_turn(uint32_t op) {
    struct entry *entry = NULL;
    wait_until(variant, my_turn, &entry);
    if (entry->op != op) {
        /* Another operation than the leader's thread made: a write it did not make, so
         * the monitor stops the run with a divergence alarm that shows this. */
        static const char message[] = "mvee lock agent: this thread's lock operations differ from the leader's\n";
        (void)!write(2, message, sizeof message - 1);
    }
    return entry->result;
}

static void advance(void) {
    __atomic_add_fetch(&log_header->cursor[variant], 1, __ATOMIC_SEQ_CST);
    ring(variant);
    ring(0);
}

/* Whether the process may have more than one thread: until its first pthread_create, the
 * order of operations on its own objects is its program order, the same in every variant,
 * and they run as natively (a single-threaded Python makes thousands). */
static int threaded;

/* glibc's layouts: a mutex's kind bit for PTHREAD_PROCESS_SHARED, a semaphore's futex
 * flags (LLL_SHARED, 128, for a shared one: sem_open's, sem_init's with pshared; 0 else). */
#define MUTEX_PSHARED_BIT 128
static int mutex_shared(pthread_mutex_t *mutex) {
    return (mutex->__data.__kind & MUTEX_PSHARED_BIT) != 0;
}

static int sem_shared(sem_t *sem) {
    return ((int *)sem)[sizeof(void *) == 8 ? 2 : 1] != 0;
}

/* A fork is an operation too: the child starts with its locks as the leader's child
 * does, every operation before the fork done, none after it. The leader holds its lock
 * over the fork (the log is shared: the parent releases it); a follower's cursor stays
 * at the fork's entry until the parent moves it on. */
static __thread int forking;  /* this thread's fork is ordered */

static void before_fork(void) {
    /* (A process that never ordered an operation, as a shell, has nothing to order it by.) */
    forking = (threaded || initialised > 0) && active();
    if (!forking)
        return;
    if (variant == 0) {
        leader_lock();
        append(OP_FORK, 0);
    } else {
        await_turn(OP_FORK);
    }
}

static void after_fork_parent(void) {
    if (!forking)
        return;
    forking = 0;
    if (variant == 0)
        leader_unlock();
    else
        advance();
}

/* The child of a process that had threads stays ordered: its objects are as the parent's
 * were (in a follower, never touched since). */
static void after_fork_child(void) {
    forking = 0;
    thread_key = 0;  /* another TID */
}

/* --- the wrapped primitives --- */

static int ordered(int shared) {
    return (threaded || shared) && active();
}

/* A follower's operation: the leader's result, at its turn. It never touches the object:
 * the order is the log's (and so is the memory ordering: the cursor is an atomic), and an
 * object a follower shares with the leader (a semaphore in a file both opened, as
 * multiprocessing's) is changed once, by the leader. */
static int32_t replay(uint32_t op) {
    int32_t result = await_turn(op);
    advance();
    return result;
}

/* A semaphore operation's result as the leader had it: 0, or -1 with errno. */
static int sem_result(int32_t error) {
    if (error == 0)
        return 0;
    errno = error;
    return -1;
}

/* A mutex or semaphore operation: one that blocks is entered after it, the others inside
 * the leader's lock. A semaphore's entry is 0 or its errno (`with_errno`). */
typedef int (*operation_t)(void *);

static int operation(void *object, int shared, operation_t real, uint32_t op, int blocks, int with_errno) {
    if (!ordered(shared))
        return real(object);
    if (variant != 0) {
        int32_t entry = replay(op);
        return with_errno ? sem_result(entry) : entry;
    }
    if (!blocks)
        leader_lock();
    int result = real(object);
    int32_t entry = with_errno && result ? errno : result;
    if (blocks) {
        record(op, entry);
    } else {
        append(op, entry);
        leader_unlock();
    }
    return with_errno ? sem_result(entry) : entry;
}

#define ORDERED(name, type, shared, op, blocks, with_errno)                                 \
    int name(type *object) {                                                                \
        return operation(object, shared(object), (operation_t)real_##name, op, blocks, with_errno); \
    }

ORDERED(pthread_mutex_lock, pthread_mutex_t, mutex_shared, OP_LOCK, 1, 0)
ORDERED(pthread_mutex_trylock, pthread_mutex_t, mutex_shared, OP_LOCK, 0, 0)
ORDERED(pthread_mutex_unlock, pthread_mutex_t, mutex_shared, OP_UNLOCK, 0, 0)
ORDERED(sem_wait, sem_t, sem_shared, OP_SEM_WAIT, 1, 1)
ORDERED(sem_trywait, sem_t, sem_shared, OP_SEM_WAIT, 0, 1)
ORDERED(sem_post, sem_t, sem_shared, OP_SEM_POST, 0, 1)

int pthread_mutex_timedlock(pthread_mutex_t *mutex, const struct timespec *deadline) {
    if (!ordered(mutex_shared(mutex)))
        return real_pthread_mutex_timedlock(mutex, deadline);
    if (variant != 0)
        return replay(OP_LOCK);
    int result = real_pthread_mutex_timedlock(mutex, deadline);
    record(OP_LOCK, result);
    return result;
}

/* A wait is the release of the mutex and its re-acquisition, with the wait's result. */
static int cond_wait(pthread_cond_t *cond, pthread_mutex_t *mutex, const struct timespec *deadline) {
    if (variant != 0) {
        replay(OP_COND_RELEASE);
        return replay(OP_COND_REACQUIRE);
    }
    /* Entered before the release inside the wait: no other thread can take the mutex in
     * between, and a try that fails there is replayed as failed. */
    record(OP_COND_RELEASE, 0);
    int result = deadline ? real_pthread_cond_timedwait(cond, mutex, deadline) : real_pthread_cond_wait(cond, mutex);
    record(OP_COND_REACQUIRE, result);
    return result;
}

int pthread_cond_wait(pthread_cond_t *cond, pthread_mutex_t *mutex) {
    return ordered(mutex_shared(mutex)) ? cond_wait(cond, mutex, NULL) : real_pthread_cond_wait(cond, mutex);
}

int pthread_cond_timedwait(pthread_cond_t *cond, pthread_mutex_t *mutex, const struct timespec *deadline) {
    return ordered(mutex_shared(mutex)) ? cond_wait(cond, mutex, deadline)
                                        : real_pthread_cond_timedwait(cond, mutex, deadline);
}

/* A follower's threads never wait on a condition variable: nothing to wake (and one the
 * leader shares would wake the leader's). */
int pthread_cond_signal(pthread_cond_t *cond) {
    return variant > 0 && initialised > 0 ? 0 : real_pthread_cond_signal(cond);
}

int pthread_cond_broadcast(pthread_cond_t *cond) {
    return variant > 0 && initialised > 0 ? 0 : real_pthread_cond_broadcast(cond);
}

int pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*start)(void *), void *arg) {
    threaded = 1;
    active();  /* the log is mapped while the process has one thread */
    return real_pthread_create(thread, attr, start, arg);
}

/* A semaphore's wait that may block: entered after it. */
static int sem_blocking(int result) {
    int error = result ? errno : 0;
    record(OP_SEM_WAIT, error);
    return sem_result(error);
}

int sem_timedwait(sem_t *sem, const struct timespec *deadline) {
    if (!ordered(sem_shared(sem)))
        return real_sem_timedwait(sem, deadline);
    return variant != 0 ? sem_result(replay(OP_SEM_WAIT)) : sem_blocking(real_sem_timedwait(sem, deadline));
}

int sem_clockwait(sem_t *sem, clockid_t clock, const struct timespec *deadline) {
    if (!ordered(sem_shared(sem)))
        return real_sem_clockwait(sem, clock, deadline);
    return variant != 0 ? sem_result(replay(OP_SEM_WAIT))
                        : sem_blocking(real_sem_clockwait(sem, clock, deadline));
}

int sem_getvalue(sem_t *restrict sem, int *restrict value) {
    if (!ordered(sem_shared(sem)))
        return real_sem_getvalue(sem, value);
    int32_t seen;
    if (variant != 0) {
        seen = replay(OP_SEM_VALUE);
    } else {
        leader_lock();
        seen = real_sem_getvalue(sem, value) ? INT32_MIN : *value;
        append(OP_SEM_VALUE, seen);
        leader_unlock();
    }
    if (seen == INT32_MIN)
        return sem_result(EINVAL);
    *value = seen;
    return 0;
}

/* --- the environment: the program does not see the agent's variables; a program it
 * executes gets them back (with index 00: the monitor writes each variant's at the exec) --- */

static size_t count(char *const list[]) {
    size_t n = 0;
    while (list && list[n])
        n++;
    return n;
}

static const char *preload_of(char *const envp[]) {
    for (size_t i = 0; envp && envp[i]; i++)
        if (!strncmp(envp[i], "LD_PRELOAD=", 11))
            return envp[i] + 11;
    return NULL;
}

static size_t preload_room(char *const envp[]) {
    const char *theirs = preload_of(envp);
    return 11 + strlen(preload_entry) + 1 + (theirs ? strlen(theirs) : 0) + 1;
}

/* envp with the agent's variable first (the monitor looks at envp[0]) and LD_PRELOAD
 * with the agent (where envp has it, else last). */
static char **with_agent(char *const envp[], char **out, char *preload) {
    const char *theirs = preload_of(envp);
    strcpy(preload, "LD_PRELOAD=");
    strcat(preload, preload_entry);
    if (theirs && *theirs) {
        strcat(preload, ":");
        strcat(preload, theirs);
    }
    size_t n = 0;
    out[n++] = agent_variable;
    for (size_t i = 0; envp && envp[i]; i++)
        if (!strncmp(envp[i], "LD_PRELOAD=", 11))
            out[n++] = preload;
        else if (strncmp(envp[i], VARIABLE, sizeof VARIABLE - 1))
            out[n++] = envp[i];
    if (!theirs)
        out[n++] = preload;
    out[n] = NULL;
    return out;
}

#define WITH_AGENT(envp, name)                                      \
    char *name##_list[count(envp) + 3];                             \
    char name##_preload[variant >= 0 ? preload_room(envp) : 1];     \
    char *const *name = variant >= 0 ? with_agent(envp, name##_list, name##_preload) : (envp)

int execve(const char *path, char *const argv[], char *const envp[]) {
    WITH_AGENT(envp, env);
    return real_execve(path, argv, env);
}

int execvpe(const char *file, char *const argv[], char *const envp[]) {
    WITH_AGENT(envp, env);
    return real_execvpe(file, argv, env);
}

int fexecve(int fd, char *const argv[], char *const envp[]) {
    WITH_AGENT(envp, env);
    return real_fexecve(fd, argv, env);
}

int execv(const char *path, char *const argv[]) {
    return execve(path, argv, environ);
}

int execvp(const char *file, char *const argv[]) {
    return execvpe(file, argv, environ);
}

#define VA_ARGV(first, args, argv, extra)              \
    size_t argc = 1;                                   \
    va_start(args, first);                             \
    while (va_arg(args, char *))                       \
        argc++;                                        \
    va_end(args);                                      \
    char *argv[argc + 1];                              \
    argv[0] = (char *)(first);                         \
    va_start(args, first);                             \
    for (size_t i = 1; i <= argc; i++)                 \
        argv[i] = va_arg(args, char *);                \
    extra;                                             \
    va_end(args)

int execl(const char *path, const char *arg, ...) {
    va_list args;
    VA_ARGV(arg, args, argv, (void)0);
    return execve(path, argv, environ);
}

int execlp(const char *file, const char *arg, ...) {
    va_list args;
    VA_ARGV(arg, args, argv, (void)0);
    return execvpe(file, argv, environ);
}

int execle(const char *path, const char *arg, ...) {
    va_list args;
    char *const *envp;
    VA_ARGV(arg, args, argv, envp = va_arg(args, char *const *));
    return execve(path, argv, envp);
}

int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *actions,
                const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
    WITH_AGENT(envp, env);
    return real_posix_spawn(pid, path, actions, attr, argv, env);
}

int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *actions,
                 const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
    WITH_AGENT(envp, env);
    return real_posix_spawnp(pid, file, actions, attr, argv, env);
}

__attribute__((constructor)) static void load(void) {
    resolve();
    const char *value = getenv("MVEE_LOCK_AGENT");
    const char *preload = getenv("LD_PRELOAD");
    if (!value || !preload || strlen(value) < 4 || value[2] != ':' || strlen(value) >= PATH_MAX)
        return;
    const char *colon = strchr(preload, ':');
    size_t own = colon ? (size_t)(colon - preload) : strlen(preload);
    if (own >= sizeof preload_entry)
        return;
    memcpy(preload_entry, preload, own);
    strcpy(log_path, value + 3);
    strcpy(agent_variable, VARIABLE "00:");
    strcat(agent_variable, log_path);
    int index = (value[0] - '0') * 10 + (value[1] - '0');
    /* The program sees the environment it would see natively. */
    if (colon && colon[1])
        setenv("LD_PRELOAD", colon + 1, 1);
    else
        unsetenv("LD_PRELOAD");
    unsetenv("MVEE_LOCK_AGENT");
    if (index < 0 || index >= MAX_VARIANTS)
        return;
    variant = index;
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}
