/* turns: threads take turns at one job, as sort's merge tree or a work queue does.
 *
 *   turns [-p] [ITEMS [THREADS [DIRECTORY]]]
 *
 * Each thread takes the next item number under a mutex. Without a directory it writes
 * the line "line N" while it holds the mutex, then works a little outside it; with
 * one, it opens DIRECTORY/N outside the mutex, as git grep's workers open the file
 * they took, reads it and closes it, and the main thread prints how many bytes all
 * read. The output is the same in every run; which thread does which item is not:
 * natively it differs from run to run, and under the monitor from variant to variant
 * (a follower's thread B writes the line the leader's A writes while the follower's A
 * sleeps on the mutex, or the two open each other's file). mvee.thread_pairing lets
 * such threads change partners. With -p the workers are processes the main one forks,
 * sharing the mutex and the counters in shared memory (as a multiprocessing.Pool's
 * workers share their task queue's semaphore).
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

struct shared {
    pthread_mutex_t lock;
    int next_item;
    long bytes_read;
};

static struct shared *shared;
static int items;
static const char *directory;

static long read_item(int item) {
    char path[4096], buffer[4096];
    snprintf(path, sizeof path, "%s/%d", directory, item);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        exit(4);
    long total = 0;
    for (ssize_t got; (got = read(fd, buffer, sizeof buffer)) > 0;)
        total += got;
    close(fd);
    return total;
}

static void *take_turns(void *unused) {
    char text[32];
    (void)unused;
    for (;;) {
        pthread_mutex_lock(&shared->lock);
        if (shared->next_item >= items) {
            pthread_mutex_unlock(&shared->lock);
            return NULL;
        }
        int item = shared->next_item++;
        if (directory == NULL) {
            int length = snprintf(text, sizeof text, "line %d\n", item);
            if (write(1, text, length) != length)
                exit(3);
        }
        pthread_mutex_unlock(&shared->lock);
        if (directory != NULL) {
            long got = read_item(item);
            pthread_mutex_lock(&shared->lock);
            shared->bytes_read += got;
            pthread_mutex_unlock(&shared->lock);
        }
        volatile unsigned work = 0;
        for (unsigned i = 0; i < 20000; i++)
            work += i;
    }
}

int main(int argc, char **argv) {
    int processes = argc > 1 && strcmp(argv[1], "-p") == 0;
    argc -= processes, argv += processes;
    items = argc > 1 ? atoi(argv[1]) : 200;
    int workers = argc > 2 ? atoi(argv[2]) : 2;
    directory = argc > 3 ? argv[3] : NULL;
    if (workers < 1 || workers > 16)
        return 2;
    shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED)
        return 1;
    pthread_mutexattr_t shareable;
    pthread_mutexattr_init(&shareable);
    pthread_mutexattr_setpshared(&shareable, PTHREAD_PROCESS_SHARED);
    pthread_mutex_init(&shared->lock, &shareable);
    if (processes) {
        fflush(stdout);
        for (int i = 0; i < workers; i++) {
            pid_t child = fork();
            if (child < 0)
                return 1;
            if (child == 0) {
                take_turns(NULL);
                _exit(0);
            }
        }
        for (int status; wait(&status) > 0;)
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                return 1;
    } else {
        pthread_t threads[16];
        for (int i = 0; i < workers; i++)
            if (pthread_create(&threads[i], NULL, take_turns, NULL) != 0)
                return 1;
        for (int i = 0; i < workers; i++)
            pthread_join(threads[i], NULL);
    }
    if (directory != NULL)
        printf("read %ld bytes from %d files\n", shared->bytes_read, items);
    printf("done\n");
    return 0;
}
