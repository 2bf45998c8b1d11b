"""The declarative syscall table: what each syscall's arguments are and who runs it.

Names are ABI-neutral; numbers come from mvee.abi. A syscall missing here stops
the run with an "unsupported" alarm naming it. Rules of thumb behind the policies:
- calls that create file descriptors run in EACH variant, so fd tables stay mirrored;
- calls with effects outside the process (I/O, the file system, the clock, entropy)
  run in the LEADER only, the others get its result and out-buffers;
- calls that shape the process itself (memory, signal dispositions, TLS) run in EACH.
"""

from __future__ import annotations

import os

from mvee.syscall_spec import (
    ALL_ABIS,
    Addr,
    CloneArgs,
    CString,
    Deadline,
    Depends,
    EpollEvent,
    EpollEvents,
    Fd,
    FdSet,
    FileTimes,
    Flags,
    Ignored,
    InBuffer,
    InOutLock,
    InStruct,
    Int,
    IovecIn,
    IovecOut,
    Lock,
    Millis,
    MmsgIn,
    MmsgOut,
    MsgIn,
    MsgOut,
    OutBuffer,
    OutPages,
    OutSized,
    OutStruct,
    Pid,
    Policy,
    PollFds,
    SigAction,
    SockAddr,
    StringArray,
    Syscall,
    TimeLeft,
    Timeout,
    UpdatedTimeout,
)

# CLOCK_MONOTONIC, _RAW, _COARSE, CLOCK_BOOTTIME: clocks for timeouts, not dates.
MONOTONIC_CLOCKS = frozenset({1, 4, 6, 7})

EACH = Policy.EACH
EACH_LEADER_RESULT = Policy.EACH_LEADER_RESULT
LEADER = Policy.LEADER
LEADER_FIRST = Policy.LEADER_FIRST
LOCAL = Policy.LOCAL
UNSUPPORTED = Policy.UNSUPPORTED

# Rows of one ABI only: 32-bit variants of 64-bit calls, i386's old multiplexers ...
I386_ONLY = ("i386",)
X86_64_ONLY = ("x86_64",)

AT_FD = Fd("dirfd")
MAP_ANONYMOUS = 0x20
MAP_FIXED = 0x10
# What an open may do once only: the leader did it, the others open what it made.
OPEN_ONCE_ONLY = ("flags", os.O_CREAT | os.O_EXCL | os.O_TRUNC)
# Who changes mappings names the range it changes: the wait-loop page must stay out of it.
RANGE = ("addr", "length")

# ioctl requests known to the monitor (asm-generic/ioctls.h); the third argument's kind.
IOCTL_ARGUMENT = Depends("arg", on="request", cases={
    0x5401: OutStruct("termios", "termios"),  # TCGETS
    0x5402: InStruct("termios", "termios"),  # TCSETS
    0x5403: InStruct("termios", "termios"),  # TCSETSW
    0x5404: InStruct("termios", "termios"),  # TCSETSF
    0x540F: OutStruct("pgrp", "int"),  # TIOCGPGRP
    0x5413: OutStruct("winsize", "winsize"),  # TIOCGWINSZ
    0x541B: OutStruct("count", "int"),  # FIONREAD
    0x5421: InStruct("on", "int"),  # FIONBIO
    0x5451: Int("unused"),  # FIOCLEX
    0x5450: Int("unused"),  # FIONCLEX
    0x40049409: Fd("src_fd"),  # FICLONE (cp, install): the leader's file shares the extents
    0x4020940D: InStruct("range", "file_clone_range"),  # FICLONERANGE
})

# fcntl commands take an integer, or nothing (the register then holds garbage), or a
# struct flock: record locks (F_GETLK, F_SETLK, F_SETLKW), their 64-bit forms on i386
# and open-file-description locks (F_OFD_*). fcntl64 reads OFD locks as flock64.
F_GETLK, F_SETLK, F_SETLKW, F_GETLK64, F_SETLK64, F_SETLKW64 = 5, 6, 7, 12, 13, 14
F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW = 36, 37, 38
F_GETFD, F_GETFL = 1, 3
LOCKS = (F_GETLK, F_SETLK, F_SETLKW, F_GETLK64, F_SETLK64, F_SETLKW64, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW)


def _fcntl_argument(ofd_lock: str) -> Depends:
    return Depends("arg", on="cmd", default=Int("arg"), cases={
        **dict.fromkeys((F_GETFD, F_GETFL, 9, 11, 1025, 1032, 1034), Ignored("unused")),  # ... F_GETPIPE_SZ
        F_GETLK: InOutLock("lock", "flock"),
        **dict.fromkeys((F_SETLK, F_SETLKW), Lock("lock", "flock")),
        F_GETLK64: InOutLock("lock", "flock64"),
        **dict.fromkeys((F_SETLK64, F_SETLKW64), Lock("lock", "flock64")),
        F_OFD_GETLK: InOutLock("lock", ofd_lock),
        **dict.fromkeys((F_OFD_SETLK, F_OFD_SETLKW), Lock("lock", ofd_lock)),
    })


# Variants are separate processes: a lock the leader holds would make a follower's
# identical lock conflict (or wait forever), so locks are taken in the leader only and
# their result is everyone's. A flag read returns the leader's flags: a follower's
# placeholder for a socket it did not accept (accept) has its listener's.
FCNTL_POLICIES = ("cmd", {**dict.fromkeys(LOCKS, LEADER),
                          **dict.fromkeys((F_GETFD, F_GETFL), EACH_LEADER_RESULT)})

# i386 socketcall(call, args): the row each call selects, with the number of words its
# arguments take (send and recv are sendto and recvfrom without an address; accept is
# accept4 without flags).
SOCKETCALL = {
    1: ("socket", 3), 2: ("bind", 3), 3: ("connect", 3), 4: ("listen", 2), 5: ("accept4", 3),
    6: ("getsockname", 3), 7: ("getpeername", 3), 8: ("socketpair", 4), 9: ("sendto", 4),
    10: ("recvfrom", 4), 11: ("sendto", 6), 12: ("recvfrom", 6), 13: ("shutdown", 2),
    14: ("setsockopt", 5), 15: ("getsockopt", 5), 16: ("sendmsg", 3), 17: ("recvmsg", 3),
    18: ("accept4", 4), 19: ("recvmmsg", 5), 20: ("sendmmsg", 4),
}
MSG_NOSIGNAL = 0x4000
SOCKLEN = InStruct("addrlen", "int")  # an in/out length: compared as it goes in
FD_SETS = tuple(FdSet(fds, nfds="nfds") for fds in ("readfds", "writefds", "exceptfds"))
EPOLL_EVENTS = EpollEvents("events", epfd="epfd")


PROCESSES = ("a call on processes or threads whose PIDs, memory or namespaces the monitor "
             "does not translate between the variants yet")
SYSV_IPC = ("System V IPC: a shared-memory segment attached in every variant would take each "
            "variant's writes (N times over), and one attached in the leader only would leave the "
            "others without it; semaphores and message queues are not supported yet")


def _stat(name: str, struct: str, abis: tuple[str, ...] = ALL_ABIS) -> list[Syscall]:
    return [
        Syscall(name, (CString("path"), OutStruct("buf", struct)), LEADER, abis),
        Syscall("l" + name, (CString("path"), OutStruct("buf", struct)), LEADER, abis),
        Syscall("f" + name, (Fd("fd"), OutStruct("buf", struct)), LEADER, abis, local_on_own_fd="fd"),
    ]


TABLE: list[Syscall] = [
    # --- reading and writing: the leader performs the I/O once ---
    Syscall("read", (Fd("fd"), OutBuffer("buf", length="count"), Int("count")), LEADER,
            local_on_own_fd="fd"),
    Syscall("write", (Fd("fd"), InBuffer("buf", length="count"), Int("count")), LEADER,
            sigpipe_on_epipe=True),
    Syscall("pread64", (Fd("fd"), OutBuffer("buf", length="count"), Int("count"), Int("offset")), LEADER,
            local_on_own_fd="fd"),
    Syscall("pwrite64", (Fd("fd"), InBuffer("buf", length="count"), Int("count"), Int("offset")), LEADER,
            sigpipe_on_epipe=True),
    Syscall("readv", (Fd("fd"), IovecOut("iov", count="iovcnt"), Int("iovcnt")), LEADER,
            local_on_own_fd="fd"),
    Syscall("writev", (Fd("fd"), IovecIn("iov", count="iovcnt"), Int("iovcnt")), LEADER,
            sigpipe_on_epipe=True),
    Syscall("lseek", (Fd("fd"), Int("offset"), Int("whence")), LEADER, local_on_own_fd="fd"),
    Syscall("_llseek", (Fd("fd"), Int("offset_high"), Int("offset_low"),
                        OutStruct("result", "loff_t"), Int("whence")), LEADER, I386_ONLY,
            local_on_own_fd="fd"),
    Syscall("getdents64", (Fd("fd"), OutBuffer("dirp", length="count"), Int("count")), LEADER,
            local_on_own_fd="fd"),
    Syscall("ioctl", (Fd("fd"), Flags("request"), IOCTL_ARGUMENT), LEADER),
    Syscall("fsync", (Fd("fd"),), LEADER),
    Syscall("fdatasync", (Fd("fd"),), LEADER),
    Syscall("ftruncate", (Fd("fd"), Int("length")), LEADER),
    Syscall("fallocate", (Fd("fd"), Flags("mode"), Int("offset"), Int("len")), LEADER),
    Syscall("copy_file_range", (Fd("fd_in"), Addr("off_in"), Fd("fd_out"), Addr("off_out"),
                                Int("len"), Flags("flags")), LEADER),
    Syscall("sendfile", (Fd("out_fd"), Fd("in_fd"), Addr("offset"), Int("count")), LEADER),
    Syscall("sendfile64", (Fd("out_fd"), Fd("in_fd"), Addr("offset"), Int("count")), LEADER,
            I386_ONLY),
    # --- file descriptors: created in each variant, so fd tables stay mirrored ---
    Syscall("open", (CString("path"), Flags("flags"), Int("mode")), LEADER_FIRST,
            follower_clears=OPEN_ONCE_ONLY, opens=("", "path", "flags")),
    Syscall("openat", (AT_FD, CString("path"), Flags("flags"), Int("mode")), LEADER_FIRST,
            follower_clears=OPEN_ONCE_ONLY, opens=("dirfd", "path", "flags")),
    Syscall("creat", (CString("path"), Int("mode")), LEADER_FIRST),
    Syscall("close", (Fd("fd"),), EACH_LEADER_RESULT, closes="fd"),
    # Python's subprocess in the child before exec: the fd tables are mirrored.
    Syscall("close_range", (Fd("first"), Int("last"), Flags("flags")), EACH_LEADER_RESULT),
    Syscall("dup", (Fd("fd"),), EACH),
    Syscall("dup2", (Fd("oldfd"), Fd("newfd")), EACH),
    Syscall("dup3", (Fd("oldfd"), Fd("newfd"), Flags("flags")), EACH),
    Syscall("fcntl", (Fd("fd"), Int("cmd"), _fcntl_argument("flock")), EACH, policy_cases=FCNTL_POLICIES),
    Syscall("fcntl64", (Fd("fd"), Int("cmd"), _fcntl_argument("flock64")), EACH, I386_ONLY,
            policy_cases=FCNTL_POLICIES),
    Syscall("flock", (Fd("fd"), Int("operation")), LEADER),
    Syscall("pipe", (OutStruct("fds", "fd_pair"),), EACH),
    Syscall("pipe2", (OutStruct("fds", "fd_pair"), Flags("flags")), EACH),
    # A pidfd of the variant's own counterpart of the process (asyncio waits for its
    # children so since Python 3.12): readable when that one ends. Of a process outside
    # the variants, each variant's own fd too: opening it acts on nothing.
    Syscall("pidfd_open", (Pid("pid"), Flags("flags")), EACH, foreign_process=EACH),
    Syscall("eventfd", (Int("initval"),), EACH),
    Syscall("eventfd2", (Int("initval"), Flags("flags")), EACH),
    Syscall("timerfd_create", (Int("clockid"), Flags("flags")), EACH),
    Syscall("signalfd", (Fd("fd"), InStruct("mask", "sigset"), Int("sizemask")), EACH),
    Syscall("signalfd4", (Fd("fd"), InStruct("mask", "sigset"), Int("sizemask"), Flags("flags")), EACH),
    Syscall("epoll_create", (Int("size"),), EACH),
    Syscall("epoll_create1", (Flags("flags"),), EACH),
    # --- sockets: made in each variant (a placeholder in the others), used by the leader ---
    Syscall("socket", (Int("domain"), Flags("type"), Int("protocol")), EACH),
    Syscall("socketpair", (Int("domain"), Flags("type"), Int("protocol"), OutStruct("sv", "fd_pair")), EACH),
    Syscall("connect", (Fd("fd"), SockAddr("addr", length="addrlen"), Int("addrlen")), LEADER),
    Syscall("bind", (Fd("fd"), SockAddr("addr", length="addrlen"), Int("addrlen")), LEADER),
    Syscall("listen", (Fd("fd"), Int("backlog")), LEADER),
    Syscall("accept", (Fd("fd"), OutSized("addr", length="addrlen"), SOCKLEN), LEADER_FIRST, X86_64_ONLY,
            follower_duplicates=("fd", None)),
    Syscall("accept4", (Fd("fd"), OutSized("addr", length="addrlen"), SOCKLEN, Flags("flags")), LEADER_FIRST,
            follower_duplicates=("fd", "flags")),
    Syscall("getsockname", (Fd("fd"), OutSized("addr", length="addrlen"), SOCKLEN), LEADER),
    Syscall("getpeername", (Fd("fd"), OutSized("addr", length="addrlen"), SOCKLEN), LEADER),
    Syscall("setsockopt", (Fd("fd"), Int("level"), Int("optname"), InBuffer("optval", length="optlen"),
                           Int("optlen")), LEADER),
    Syscall("getsockopt", (Fd("fd"), Int("level"), Int("optname"), OutSized("optval", length="optlen"),
                           InStruct("optlen", "int")), LEADER),
    Syscall("shutdown", (Fd("fd"), Int("how")), LEADER),
    Syscall("sendto", (Fd("fd"), InBuffer("buf", length="len"), Int("len"), Flags("flags"),
                       SockAddr("dest_addr", length="addrlen"), Int("addrlen")), LEADER,
            sigpipe_on_epipe=True, sigpipe_unless=("flags", MSG_NOSIGNAL)),
    Syscall("recvfrom", (Fd("fd"), OutBuffer("buf", length="len"), Int("len"), Flags("flags"),
                         OutSized("src_addr", length="addrlen"), SOCKLEN), LEADER),
    Syscall("sendmsg", (Fd("fd"), MsgIn("msg"), Flags("flags")), LEADER,
            sigpipe_on_epipe=True, sigpipe_unless=("flags", MSG_NOSIGNAL)),
    Syscall("recvmsg", (Fd("fd"), MsgOut("msg"), Flags("flags")), LEADER),
    Syscall("sendmmsg", (Fd("fd"), MmsgIn("msgvec", count="vlen"), Int("vlen"), Flags("flags")), LEADER,
            sigpipe_on_epipe=True, sigpipe_unless=("flags", MSG_NOSIGNAL)),
    *(Syscall(name, (Fd("fd"), MmsgOut("msgvec", count="vlen"), Int("vlen"), Flags("flags"),
                     UpdatedTimeout("timeout", struct)), LEADER, abis)
      for name, struct, abis in (("recvmmsg", "timespec", ALL_ABIS),
                                 ("recvmmsg_time64", "timespec64", I386_ONLY))),
    # --- waiting for file descriptors: the leader waits, the others get what it found ---
    Syscall("poll", (PollFds("fds", "pollfd", count="nfds"), Int("nfds"), Millis("timeout")), LEADER),
    Syscall("ppoll", (PollFds("fds", "pollfd", count="nfds"), Int("nfds"), UpdatedTimeout("tmo", "timespec"),
                      InStruct("sigmask", "sigset"), Int("sigsetsize")), LEADER),
    Syscall("ppoll_time64", (PollFds("fds", "pollfd", count="nfds"), Int("nfds"),
                             UpdatedTimeout("tmo", "timespec64"), InStruct("sigmask", "sigset"),
                             Int("sigsetsize")), LEADER, I386_ONLY),
    *(Syscall(name, (Int("nfds"), *FD_SETS, UpdatedTimeout("timeout", "timeval")), LEADER, abis)
      for name, abis in (("select", X86_64_ONLY), ("_newselect", I386_ONLY))),
    # The sixth argument points to {sigset pointer, size}: only its NULL-ness is compared.
    *(Syscall(name, (Int("nfds"), *FD_SETS, UpdatedTimeout("timeout", struct), Addr("sigmask")), LEADER, abis)
      for name, struct, abis in (("pselect6", "timespec", ALL_ABIS),
                                 ("pselect6_time64", "timespec64", I386_ONLY))),
    Syscall("epoll_ctl", (Fd("epfd"), Int("op"), Fd("fd"), EpollEvent("event", epfd="epfd", op="op")),
            LEADER),
    Syscall("epoll_wait", (Fd("epfd"), EPOLL_EVENTS, Int("maxevents"), Millis("timeout")), LEADER),
    Syscall("epoll_pwait", (Fd("epfd"), EPOLL_EVENTS, Int("maxevents"), Millis("timeout"),
                            InStruct("sigmask", "sigset"), Int("sigsetsize")), LEADER),
    Syscall("epoll_pwait2", (Fd("epfd"), EPOLL_EVENTS, Int("maxevents"), Timeout("timeout", "timespec64"),
                             InStruct("sigmask", "sigset"), Int("sigsetsize")), LEADER),
    # A timerfd ticks in the leader, whose reads of it are everyone's.
    *(Syscall(name, (Fd("fd"), Flags("flags"), Deadline("new", struct, flags="flags"),
                     OutStruct("old", struct)), LEADER, abis)
      for name, struct, abis in (("timerfd_settime", "itimerspec", ALL_ABIS),
                                 ("timerfd_settime64", "itimerspec64", I386_ONLY))),
    Syscall("timerfd_gettime", (Fd("fd"), OutStruct("curr", "itimerspec")), LEADER),
    Syscall("timerfd_gettime64", (Fd("fd"), OutStruct("curr", "itimerspec64")), LEADER, I386_ONLY),
    Syscall("fadvise64", (Fd("fd"), Int("offset"), Int("len"), Int("advice")), EACH),
    Syscall("fadvise64_64", (Fd("fd"), Int("offset_lo"), Int("offset_hi"), Int("len_lo"),
                             Int("len_hi"), Int("advice")), EACH, I386_ONLY),
    Syscall("umask", (Int("mask"),), EACH),
    Syscall("chdir", (CString("path"),), EACH),
    Syscall("fchdir", (Fd("fd"),), EACH),
    # --- the file system: the leader changes it once ---
    *_stat("stat", "stat"),
    *_stat("stat64", "stat64", I386_ONLY),
    Syscall("newfstatat", (AT_FD, CString("path"), OutStruct("buf", "stat"), Flags("flags")),
            LEADER, X86_64_ONLY, local_on_own_fd="dirfd"),
    Syscall("fstatat64", (AT_FD, CString("path"), OutStruct("buf", "stat64"), Flags("flags")),
            LEADER, I386_ONLY, local_on_own_fd="dirfd"),
    Syscall("statx", (AT_FD, CString("path"), Flags("flags"), Flags("mask"),
                      OutStruct("buf", "statx")), LEADER, local_on_own_fd="dirfd"),
    Syscall("statfs", (CString("path"), OutStruct("buf", "statfs")), LEADER),
    Syscall("fstatfs", (Fd("fd"), OutStruct("buf", "statfs")), LEADER),
    Syscall("statfs64", (CString("path"), Int("size"), OutStruct("buf", "statfs64")), LEADER,
            I386_ONLY),
    Syscall("fstatfs64", (Fd("fd"), Int("size"), OutStruct("buf", "statfs64")), LEADER,
            I386_ONLY),
    Syscall("access", (CString("path"), Int("mode")), LEADER),
    Syscall("faccessat", (AT_FD, CString("path"), Int("mode")), LEADER),
    Syscall("faccessat2", (AT_FD, CString("path"), Int("mode"), Flags("flags")), LEADER),
    Syscall("readlink", (CString("path"), OutBuffer("buf", length="bufsiz"), Int("bufsiz")), LEADER),
    Syscall("readlinkat", (AT_FD, CString("path"), OutBuffer("buf", length="bufsiz"), Int("bufsiz")), LEADER),
    Syscall("getcwd", (OutBuffer("buf", length="size"), Int("size")), LEADER),
    Syscall("mkdir", (CString("path"), Int("mode")), LEADER, creates_new="path"),
    Syscall("mkdirat", (AT_FD, CString("path"), Int("mode")), LEADER, creates_new="path"),
    Syscall("rmdir", (CString("path"),), LEADER),
    Syscall("unlink", (CString("path"),), LEADER),
    Syscall("unlinkat", (AT_FD, CString("path"), Flags("flags")), LEADER),
    Syscall("rename", (CString("oldpath"), CString("newpath")), LEADER),
    Syscall("renameat", (AT_FD, CString("oldpath"), Fd("newdirfd"), CString("newpath")), LEADER),
    Syscall("renameat2", (AT_FD, CString("oldpath"), Fd("newdirfd"), CString("newpath"),
                          Flags("flags")), LEADER),
    Syscall("link", (CString("oldpath"), CString("newpath")), LEADER),
    Syscall("linkat", (AT_FD, CString("oldpath"), Fd("newdirfd"), CString("newpath"), Flags("flags")),
            LEADER),
    Syscall("symlink", (CString("target"), CString("linkpath")), LEADER),
    Syscall("symlinkat", (CString("target"), Fd("newdirfd"), CString("linkpath")), LEADER),
    Syscall("chmod", (CString("path"), Int("mode")), LEADER),
    Syscall("fchmod", (Fd("fd"), Int("mode")), LEADER),
    Syscall("fchmodat", (AT_FD, CString("path"), Int("mode")), LEADER),
    Syscall("fchmodat2", (AT_FD, CString("path"), Int("mode"), Flags("flags")), LEADER),
    Syscall("chown", (CString("path"), Int("owner"), Int("group")), LEADER),
    Syscall("fchown", (Fd("fd"), Int("owner"), Int("group")), LEADER),
    Syscall("lchown", (CString("path"), Int("owner"), Int("group")), LEADER),
    Syscall("fchownat", (AT_FD, CString("path"), Int("owner"), Int("group"), Flags("flags")),
            LEADER),
    Syscall("utimensat", (AT_FD, CString("path"), FileTimes("times", "timespec"), Flags("flags")), LEADER),
    Syscall("utimensat_time64", (AT_FD, CString("path"), FileTimes("times", "timespec64"), Flags("flags")),
            LEADER, I386_ONLY),
    Syscall("truncate", (CString("path"), Int("length")), LEADER),
    Syscall("truncate64", (CString("path"), Int("length_lo"), Int("length_hi")), LEADER, I386_ONLY),
    Syscall("ftruncate64", (Fd("fd"), Int("length_lo"), Int("length_hi")), LEADER, I386_ONLY),
    *(Syscall(name, (CString("path"), Int("owner"), Int("group")), LEADER, I386_ONLY)
      for name in ("chown32", "lchown32")),
    Syscall("fchown32", (Fd("fd"), Int("owner"), Int("group")), LEADER, I386_ONLY),
    Syscall("mknod", (CString("path"), Int("mode"), Int("dev")), LEADER),
    Syscall("mknodat", (AT_FD, CString("path"), Int("mode"), Int("dev")), LEADER),
    Syscall("sync", (), LEADER),
    Syscall("syncfs", (Fd("fd"),), LEADER),
    Syscall("getxattr", (CString("path"), CString("name"), OutBuffer("value", length="size"), Int("size")),
            LEADER),
    Syscall("lgetxattr", (CString("path"), CString("name"), OutBuffer("value", length="size"), Int("size")),
            LEADER),
    Syscall("fgetxattr", (Fd("fd"), CString("name"), OutBuffer("value", length="size"), Int("size")), LEADER),
    Syscall("listxattr", (CString("path"), OutBuffer("list", length="size"), Int("size")), LEADER),
    Syscall("llistxattr", (CString("path"), OutBuffer("list", length="size"), Int("size")), LEADER),
    Syscall("flistxattr", (Fd("fd"), OutBuffer("list", length="size"), Int("size")), LEADER),
    *(Syscall(name, (CString("path"), CString("name"), InBuffer("value", length="size"), Int("size"),
                     Flags("flags")), LEADER) for name in ("setxattr", "lsetxattr")),
    Syscall("fsetxattr", (Fd("fd"), CString("name"), InBuffer("value", length="size"), Int("size"),
                          Flags("flags")), LEADER),
    *(Syscall(name, (CString("path"), CString("name")), LEADER) for name in ("removexattr", "lremovexattr")),
    Syscall("fremovexattr", (Fd("fd"), CString("name")), LEADER),
    # --- memory: each variant shapes its own address space, at its own pace ---
    Syscall("brk", (Addr("addr"),), LOCAL),
    # i386's "mmap" (90) is old_mmap, whose one argument points to these six.
    Syscall("mmap", (Addr("addr"), Int("length"), Flags("prot"), Flags("flags"), Fd("fd"),
                     Int("offset")), EACH, X86_64_ONLY, local_when=("flags", MAP_ANONYMOUS),
            changes_mappings=RANGE, replaces_when=("flags", MAP_FIXED),
            maps_file=("prot", "flags", "fd", "offset", 1)),
    Syscall("mmap2", (Addr("addr"), Int("length"), Flags("prot"), Flags("flags"), Fd("fd"),
                      Int("pgoffset")), EACH, I386_ONLY, local_when=("flags", MAP_ANONYMOUS),
            changes_mappings=RANGE, replaces_when=("flags", MAP_FIXED),
            maps_file=("prot", "flags", "fd", "pgoffset", 4096)),
    Syscall("munmap", (Addr("addr"), Int("length")), LOCAL, changes_mappings=RANGE),
    Syscall("mprotect", (Addr("addr"), Int("length"), Flags("prot")), LOCAL, changes_mappings=RANGE),
    Syscall("madvise", (Addr("addr"), Int("length"), Int("advice")), LOCAL, changes_mappings=RANGE),
    # Which pages of the range are resident: the leader's answer (for its own mapping of
    # the same range) is everyone's.
    Syscall("mincore", (Addr("addr"), Int("length"), OutPages("vec", length="length")), LEADER),
    Syscall("mremap", (Addr("old_address"), Int("old_size"), Int("new_size"), Flags("flags"),
                       Addr("new_address")), LOCAL, changes_mappings=("old_address", "old_size")),
    # Locking a variant's own pages in memory, where its own pages are placed: its own
    # (gpg and ssh-agent lock their secrets; ps sets and reads its memory policy).
    Syscall("mlock", (Addr("addr"), Int("length")), LOCAL),
    Syscall("mlock2", (Addr("addr"), Int("length"), Flags("flags")), LOCAL),
    Syscall("munlock", (Addr("addr"), Int("length")), LOCAL),
    Syscall("mlockall", (Flags("flags"),), LOCAL),
    Syscall("munlockall", (), LOCAL),
    # Writes back a shared file mapping's pages: the page cache holds them already, one
    # copy for every variant that maps the file, so no variant sees a difference.
    Syscall("msync", (Addr("addr"), Int("length"), Flags("flags")), LOCAL),
    Syscall("get_mempolicy", (Ignored("mode"), Ignored("nodemask"), Int("maxnode"), Addr("addr"),
                              Flags("flags")), LOCAL),
    Syscall("set_mempolicy", (Int("mode"), Ignored("nodemask"), Int("maxnode")), LOCAL),
    Syscall("mbind", (Addr("addr"), Int("length"), Int("mode"), Ignored("nodemask"), Int("maxnode"),
                      Flags("flags")), LOCAL),
    # --- the process itself ---
    Syscall("arch_prctl", (Int("code"), Ignored("addr")), EACH),
    Syscall("set_thread_area", (Ignored("u_info"),), EACH),
    Syscall("set_tid_address", (Ignored("tidptr"),), EACH_LEADER_RESULT),
    # Calls that only coordinate a variant's own threads or memory run LOCAL: how often a
    # thread takes a contended lock (futex), yields or registers its per-thread areas
    # depends on the interleaving, which differs between the variants.
    Syscall("set_robust_list", (Ignored("head"), Int("len")), LOCAL),
    Syscall("rseq", (Ignored("rseq"), Int("rseq_len"), Flags("flags"), Int("sig")), LOCAL),
    Syscall("prctl", (Int("option"), Ignored("arg2"), Ignored("arg3"), Ignored("arg4"),
                      Ignored("arg5")), EACH),
    Syscall("prlimit64", (Pid("pid"), Int("resource"), InStruct("new", "rlimit64"),
                          OutStruct("old", "rlimit64")), EACH, foreign_process=LEADER),
    Syscall("getrlimit", (Int("resource"), OutStruct("rlim", "rlimit")), EACH),
    Syscall("ugetrlimit", (Int("resource"), OutStruct("rlim", "rlimit")), EACH, I386_ONLY),
    Syscall("setrlimit", (Int("resource"), InStruct("rlim", "rlimit")), EACH),
    Syscall("personality", (Flags("persona"),), EACH),
    Syscall("sched_yield", (), LOCAL),
    Syscall("membarrier", (Int("cmd"), Flags("flags"), Int("cpu_id")), LOCAL),
    Syscall("futex", (Ignored("uaddr"), Int("op"), Int("val"), Ignored("timeout"), Ignored("uaddr2"),
                      Ignored("val3")), LOCAL),
    Syscall("futex_time64", (Ignored("uaddr"), Int("op"), Int("val"), Ignored("timeout"), Ignored("uaddr2"),
                             Ignored("val3")), LOCAL, I386_ONLY),
    # After a nanosleep interrupted without a handler; the leader holds the restart block.
    Syscall("restart_syscall", (), LEADER, restarts_interrupted=True),
    Syscall("exit", (Int("status"),), EACH),
    Syscall("exit_group", (Int("status"),), EACH, ends_process=True),
    Syscall("execve", (CString("path"), StringArray("argv"), StringArray("envp")), EACH),
    # Each variant creates its own child; the children form a new set (mvee.variant_set),
    # and every variant is told the leader's child's PID (mvee.pids).
    Syscall("fork", (), EACH_LEADER_RESULT, creates_process=True),
    Syscall("vfork", (), EACH_LEADER_RESULT, creates_process=True),
    Syscall("clone", (Flags("flags"), Addr("stack"), Addr("parent_tid"), Addr("child_tid"), Addr("tls")),
            EACH_LEADER_RESULT, X86_64_ONLY, creates_process=True),
    Syscall("clone", (Flags("flags"), Addr("stack"), Addr("parent_tid"), Addr("tls"), Addr("child_tid")),
            EACH_LEADER_RESULT, I386_ONLY, creates_process=True),  # the i386 kernel's order (CLONE_BACKWARDS)
    Syscall("clone3", (CloneArgs("args", size="size"), Int("size")), EACH_LEADER_RESULT,
            creates_process=True),
    # --- identity and the outside world: virtualised to the leader's values ---
    Syscall("getpid", (), LEADER),
    Syscall("getppid", (), LEADER),
    Syscall("gettid", (), LEADER),
    Syscall("getpgrp", (), LEADER),
    Syscall("getpgid", (Pid("pid"),), LEADER),
    Syscall("getsid", (Pid("pid"),), LEADER),
    # Each variant is a process of its own: it joins or makes its own group (session), whose
    # number is the leader's.
    Syscall("setpgid", (Pid("pid"), Pid("pgid")), EACH, foreign_process=LEADER),
    Syscall("setsid", (), EACH_LEADER_RESULT),
    # The variants have the same credentials: the same change (make's setresuid(-1, euid,
    # -1) to the euid it has) leaves them alike.
    *(Syscall(name, (Int("r"), Int("e"), Int("s")), EACH_LEADER_RESULT)
      for name in ("setresuid", "setresgid")),
    *(Syscall(name, (Int("r"), Int("e"), Int("s")), EACH_LEADER_RESULT, I386_ONLY)
      for name in ("setresuid32", "setresgid32")),
    *(Syscall(name, (), LEADER) for name in ("getuid", "geteuid", "getgid", "getegid")),
    *(Syscall(name, (), LEADER, I386_ONLY) for name in ("getuid32", "geteuid32", "getgid32", "getegid32")),
    Syscall("getgroups", (Int("size"), OutBuffer("list", length="size", unit=4)), LEADER),
    Syscall("getgroups32", (Int("size"), OutBuffer("list", length="size", unit=4)), LEADER,
            I386_ONLY),
    Syscall("getresuid", (OutStruct("r", "int"), OutStruct("e", "int"), OutStruct("s", "int")),
            LEADER),
    Syscall("getresgid", (OutStruct("r", "int"), OutStruct("e", "int"), OutStruct("s", "int")),
            LEADER),
    *(Syscall(name, (OutStruct("r", "int"), OutStruct("e", "int"), OutStruct("s", "int")), LEADER, I386_ONLY)
      for name in ("getresuid32", "getresgid32")),
    Syscall("getpriority", (Int("which"), Pid("who")), LEADER),
    # Scheduling: each variant sets its own (nice, taskset, ionice); one outside the
    # variants is set once, by the leader. Queries are the leader's.
    Syscall("setpriority", (Int("which"), Pid("who"), Int("prio")), EACH, foreign_process=LEADER),
    Syscall("nice", (Int("inc"),), EACH, I386_ONLY),
    Syscall("ioprio_set", (Int("which"), Pid("who"), Int("ioprio")), EACH, foreign_process=LEADER),
    Syscall("ioprio_get", (Int("which"), Pid("who")), LEADER),
    Syscall("sched_setaffinity", (Pid("pid"), Int("cpusetsize"), InBuffer("mask", length="cpusetsize")),
            EACH, foreign_process=LEADER),
    Syscall("sched_setscheduler", (Pid("pid"), Int("policy"), InStruct("param", "int")), EACH,
            foreign_process=LEADER),
    Syscall("sched_setparam", (Pid("pid"), InStruct("param", "int")), EACH, foreign_process=LEADER),
    Syscall("sched_getscheduler", (Pid("pid"),), LEADER),
    Syscall("sched_getparam", (Pid("pid"), OutStruct("param", "int")), LEADER),
    Syscall("sched_get_priority_max", (Int("policy"),), LEADER),
    Syscall("sched_get_priority_min", (Int("policy"),), LEADER),
    Syscall("sched_rr_get_interval", (Pid("pid"), OutStruct("interval", "timespec")), LEADER),
    Syscall("sched_rr_get_interval_time64", (Pid("pid"), OutStruct("interval", "timespec64")), LEADER,
            I386_ONLY),
    Syscall("uname", (OutStruct("buf", "utsname"),), LEADER),
    Syscall("sysinfo", (OutStruct("info", "sysinfo"),), LEADER),
    Syscall("getrandom", (OutBuffer("buf", length="buflen"), Int("buflen"), Flags("flags")), LEADER,
            draws_random=("buflen", "flags")),
    Syscall("getrusage", (Int("who"), OutStruct("usage", "rusage")), LEADER),
    Syscall("times", (OutStruct("buf", "tms"),), LEADER),
    Syscall("sched_getaffinity", (Pid("pid"), Int("cpusetsize"), OutBuffer("mask", length="cpusetsize")),
            LEADER),
    Syscall("getcpu", (OutStruct("cpu", "int"), OutStruct("node", "int"), Ignored("cache")),
            LEADER),
    Syscall("time", (OutStruct("tloc", "long"),), LEADER),
    Syscall("gettimeofday", (OutStruct("tv", "timeval"), OutStruct("tz", "timezone")), LEADER),
    Syscall("clock_gettime", (Int("clockid"), OutStruct("tp", "timespec")), LEADER,
            local_in_threads=("clockid", MONOTONIC_CLOCKS)),
    Syscall("clock_gettime64", (Int("clockid"), OutStruct("tp", "timespec64")), LEADER, I386_ONLY,
            local_in_threads=("clockid", MONOTONIC_CLOCKS)),
    Syscall("clock_getres", (Int("clockid"), OutStruct("res", "timespec")), LEADER),
    Syscall("clock_getres_time64", (Int("clockid"), OutStruct("res", "timespec64")), LEADER,
            I386_ONLY),
    Syscall("nanosleep", (InStruct("req", "timespec"), TimeLeft("rem", "timespec")), LEADER),
    Syscall("clock_nanosleep", (Int("clockid"), Flags("flags"), Deadline("req", "timespec", flags="flags"),
                                TimeLeft("rem", "timespec")), LEADER),
    Syscall("clock_nanosleep_time64", (Int("clockid"), Flags("flags"),
                                       Deadline("req", "timespec64", flags="flags"),
                                       TimeLeft("rem", "timespec64")), LEADER, I386_ONLY),
    # Each variant reaps its own child: the leader first, the others its counterpart.
    Syscall("wait4", (Pid("pid"), OutStruct("status", "int"), Flags("options"),
                      OutStruct("rusage", "rusage")), LEADER_FIRST, follower_reaps=("pid", "options")),
    # --- signals: dispositions and masks belong to each variant ---
    Syscall("rt_sigaction", (Int("sig"), SigAction("act"), Ignored("oldact"), Int("sigsetsize")),
            EACH, sets_disposition=("sig", "act")),
    Syscall("rt_sigprocmask", (Int("how"), InStruct("set", "sigset"), Ignored("oldset"),
                               Int("sigsetsize")), EACH),
    Syscall("sigaltstack", (Addr("ss"), Ignored("old_ss")), EACH),
    Syscall("rt_sigreturn", (), EACH, returns_from_handler=True),
    Syscall("sigreturn", (), EACH, I386_ONLY, returns_from_handler=True),
    Syscall("rt_sigsuspend", (InStruct("mask", "sigset"), Int("sigsetsize")), EACH),
    Syscall("pause", (), EACH),
    Syscall("rt_sigpending", (OutStruct("set", "sigset"), Int("sigsetsize")), EACH),
    Syscall("kill", (Pid("pid"), Int("sig")), EACH, foreign_process=LEADER),
    Syscall("tkill", (Pid("tid"), Int("sig")), EACH, foreign_process=LEADER),
    Syscall("tgkill", (Pid("tgid"), Pid("tid"), Int("sig")), EACH, foreign_process=LEADER),
    # Timers run in the leader only: time is the world's, and the leader's view of it is
    # every variant's. The monitor mirrors the leader's timer signals into the others
    # (per-variant timers would tick a different number of times before a disarm).
    Syscall("alarm", (Int("seconds"),), LEADER),
    Syscall("setitimer", (Int("which"), InStruct("new", "itimerval"), OutStruct("old", "itimerval")),
            LEADER),
    Syscall("getitimer", (Int("which"), OutStruct("curr", "itimerval")), LEADER),
    # The sigevent holds a layout-dependent sigev_value.
    Syscall("timer_create", (Int("clockid"), Ignored("sevp"), OutStruct("timerid", "int")), LEADER),
    Syscall("timer_settime", (Int("timerid"), Flags("flags"), Deadline("new", "itimerspec", flags="flags"),
                              OutStruct("old", "itimerspec")), LEADER),
    Syscall("timer_settime64", (Int("timerid"), Flags("flags"),
                                Deadline("new", "itimerspec64", flags="flags"),
                                OutStruct("old", "itimerspec64")), LEADER, I386_ONLY),
    Syscall("timer_gettime", (Int("timerid"), OutStruct("curr", "itimerspec")), LEADER),
    Syscall("timer_gettime64", (Int("timerid"), OutStruct("curr", "itimerspec64")), LEADER, I386_ONLY),
    Syscall("timer_getoverrun", (Int("timerid"),), LEADER),
    Syscall("timer_delete", (Int("timerid"),), LEADER),
    # i386 multiplexers. socketcall is decoded as the row its call selects; one that
    # selects none stops the run.
    Syscall("socketcall", (Int("call"), Addr("args")), UNSUPPORTED, I386_ONLY, multiplexes=SOCKETCALL,
            reason="its call number selects no socket call the monitor knows"),
    Syscall("ipc", (Int("call"), Ignored("first"), Ignored("second"), Ignored("third"),
                    Ignored("ptr"), Ignored("fifth")), UNSUPPORTED, I386_ONLY, reason=SYSV_IPC),
]

# ABI name -> syscall name -> row: what the engine looks a stopped call up in.
BY_ABI: dict[str, dict[str, Syscall]] = {
    abi: {spec.name: spec for spec in TABLE if abi in spec.abis} for abi in ALL_ABIS}

# Syscalls without a row (in an ABI: i386's mmap and select are old calls of one pointer,
# x86_64's are rows), by the reason they stop the run (an alarm gives it).
_REFUSED_BY_REASON: dict[str, tuple[str, ...]] = {
    PROCESSES: (
        "waitid", "waitpid", "execveat", "get_robust_list", "get_thread_area", "modify_ldt", "kcmp",
        "pidfd_getfd", "pidfd_send_signal", "process_madvise", "process_mrelease",
        "process_vm_readv", "process_vm_writev", "ptrace", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
        "futex_waitv", "unshare", "setns", "seccomp", "vm86", "vm86old"),
    "changing credentials is not supported: each variant would change its own, and a "
    "leader-only change would leave the others with different rights": (
        "setuid", "setgid", "setreuid", "setregid", "setfsuid", "setfsgid",
        "setgroups", "setuid32", "setgid32", "setreuid32", "setregid32", "setfsuid32", "setfsgid32",
        "setgroups32", "capset", "capget"),
    "a system administrator's call (machine-wide state, privileges), refused under the monitor": (
        "_sysctl", "acct", "adjtimex", "clock_adjtime", "clock_adjtime64", "clock_settime", "clock_settime64",
        "settimeofday", "stime", "sethostname", "setdomainname", "reboot", "kexec_load", "kexec_file_load",
        "init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms",
        "mount", "umount", "umount2", "mount_setattr", "move_mount", "open_tree", "fsopen", "fsconfig",
        "fsmount", "fspick", "pivot_root", "chroot", "swapon", "swapoff", "quotactl", "quotactl_fd",
        "syslog", "vhangup", "ioperm", "iopl", "nfsservctl", "bdflush", "lookup_dcookie", "sysfs",
        "ustat", "uselib", "bpf", "perf_event_open", "fanotify_init", "fanotify_mark", "userfaultfd",
        "name_to_handle_at", "open_by_handle_at", "landlock_create_ruleset", "landlock_add_rule",
        "landlock_restrict_self", "add_key", "request_key", "keyctl", "idle"),
    SYSV_IPC: ("shmget", "shmat", "shmdt", "shmctl", "semget", "semctl", "semop", "semtimedop",
               "semtimedop_time64", "msgget", "msgsnd", "msgrcv", "msgctl"),
    "POSIX message queues are not supported yet": (
        "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_timedsend_time64",
        "mq_timedreceive_time64", "mq_notify", "mq_getsetattr"),
    "asynchronous I/O (the kernel completes it behind the monitor's back) is not supported": (
        "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
        "io_pgetevents_time64", "io_uring_setup", "io_uring_enter", "io_uring_register"),
    "a memfd's contents would exist in the leader only (its writes run there) while each "
    "variant maps its own: not supported": ("memfd_create", "memfd_secret"),
    "page migration and protection keys are not supported yet": (
        "set_mempolicy_home_node", "migrate_pages", "move_pages", "remap_file_pages", "pkey_alloc",
        "pkey_free", "pkey_mprotect", "mseal", "map_shadow_stack"),
    "sched_setattr and sched_getattr are not supported yet": ("sched_setattr", "sched_getattr"),
    "not supported yet (no row)": (
        "openat2", "getdents", "readdir", "preadv", "pwritev", "preadv2", "pwritev2",
        "readahead", "splice", "tee", "vmsplice", "sync_file_range", "inotify_init", "inotify_init1",
        "inotify_add_watch", "inotify_rm_watch",
        "rt_sigtimedwait", "rt_sigtimedwait_time64", "utime", "utimes", "futimesat", "epoll_ctl_old",
        "epoll_wait_old", "cachestat", "futex_wake", "futex_wait", "futex_requeue", "statmount",
        "listmount", "lsm_get_self_attr", "lsm_set_self_attr", "lsm_list_modules"),
    "an obsolete call that today's C libraries do not make": (
        "break", "ftime", "gtty", "stty", "lock", "mpx", "prof", "profil", "ulimit", "afs_syscall",
        "getpmsg", "putpmsg", "security", "tuxcall", "vserver", "oldstat", "oldfstat", "oldlstat",
        "olduname", "oldolduname", "sigaction", "signal", "sigpending", "sigprocmask", "sigsuspend",
        "sgetmask", "ssetmask", "select"),
    "i386's old_mmap (one pointer to the six arguments) is not supported; C libraries call mmap2": ("mmap",),
}
REFUSED: dict[str, str] = {name: reason for reason, names in _REFUSED_BY_REASON.items() for name in names}
