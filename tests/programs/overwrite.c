/* A layout-dependent function-pointer overwrite.
 *
 * read() overflows `record.name` into `record.handler`. An exploit that writes the
 * address of payload() as found in one build works there; in the SHIFTED build
 * payload() sits 8 KiB further and that address holds `hlt` bytes, so the same
 * input crashes. Built non-PIE so addresses are fixed per build. With FORKED, a forked
 * child does it while the parent waits for it and reports how it ended. */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef SHIFTED
__asm__(".text\n.globl shift_pad\nshift_pad:\n.fill 8192, 1, 0xf4\n");
#endif

void payload(void) {
    write(1, "PWNED\n", 6);
    _exit(66);
}

void benign(void) {
    write(1, "benign\n", 7);
}

struct record {
    char name[16];
    void (*volatile handler)(void);
};

static int vulnerable(void) {
    struct record record;
    record.handler = benign;
    volatile size_t length = 64; /* the bug: 64 bytes into a 16-byte field */
    read(0, record.name, length);
    record.handler();
    return 0;
}

int main(void) {
#ifdef FORKED
    pid_t child = fork();
    if (child == 0) return vulnerable();
    int status;
    waitpid(child, &status, 0);
    printf("child %s %d\n", WIFEXITED(status) ? "exited" : "killed",
           WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    return 0;
#else
    return vulnerable();
#endif
}
