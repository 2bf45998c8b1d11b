/* SHOW("name", call): prints the call's result and errno's message, then clears errno
 * (the test programs' output lines, compared with a native run's). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#define SHOW(what, call) do { \
        long result_ = (long)(call); \
        printf("%s = %ld%s%s\n", what, result_, errno ? " " : "", errno ? strerror(errno) : ""); \
        errno = 0; \
    } while (0)
