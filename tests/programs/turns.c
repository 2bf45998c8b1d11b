/* turns: threads take turns at one job, as sort's merge tree or a work queue does.
 *
 *   turns [ITEMS [THREADS [DIRECTORY]]]
 *
 * Each thread takes the next item number under a mutex. Without a directory it writes
 * the line "line N" while it holds the mutex, then works a little outside it; with
 * one, it opens DIRECTORY/N outside the mutex, as git grep's workers open the file
 * they took, reads it and closes it, and the main thread prints how many bytes all
 * read. The output is the same in every run; which thread does which item is not:
 * natively it differs from run to run, and under the monitor from variant to variant
 * (a follower's thread B writes the line the leader's A writes while the follower's A
 * sleeps on the mutex, or the two open each other's file). mvee.thread_pairing lets
 * such threads change partners.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int next_item, items;
static const char *directory;
static long bytes_read;

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
        pthread_mutex_lock(&lock);
        if (next_item >= items) {
            pthread_mutex_unlock(&lock);
            return NULL;
        }
        int item = next_item++;
        if (directory == NULL) {
            int length = snprintf(text, sizeof text, "line %d\n", item);
            if (write(1, text, length) != length)
                exit(3);
        }
        pthread_mutex_unlock(&lock);
        if (directory != NULL) {
            long got = read_item(item);
            pthread_mutex_lock(&lock);
            bytes_read += got;
            pthread_mutex_unlock(&lock);
        }
        volatile unsigned work = 0;
        for (unsigned i = 0; i < 20000; i++)
            work += i;
    }
}

int main(int argc, char **argv) {
    items = argc > 1 ? atoi(argv[1]) : 200;
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    directory = argc > 3 ? argv[3] : NULL;
    pthread_t workers[16];
    if (threads < 1 || threads > 16)
        return 2;
    for (int i = 0; i < threads; i++)
        if (pthread_create(&workers[i], NULL, take_turns, NULL) != 0)
            return 1;
    for (int i = 0; i < threads; i++)
        pthread_join(workers[i], NULL);
    if (directory != NULL)
        printf("read %ld bytes from %d files\n", bytes_read, items);
    printf("done\n");
    return 0;
}
