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
    CString,
    Depends,
    Fd,
    Flags,
    Ignored,
    InBuffer,
    InOutArray,
    InStruct,
    Int,
    IovecIn,
    IovecOut,
    OutBuffer,
    OutStruct,
    Pid,
    Policy,
    SigAction,
    SockAddr,
    StringArray,
    Syscall,
)

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
})

# fcntl commands take an integer, or nothing (the register then holds garbage), but
# record locks: variants are separate processes whose locks would conflict with each
# other, so those are unsupported.
FCNTL_ARGUMENT = Depends("arg", on="cmd", default=Int("arg"), cases={
    **dict.fromkeys((1, 3, 9, 11, 1025, 1032, 1034), Ignored("unused")),  # F_GETFD, F_GETFL ...
    **dict.fromkeys((5, 6, 7,  # F_GETLK, F_SETLK, F_SETLKW
                     12, 13, 14,  # the same, 64-bit on i386
                     36, 37, 38),  # open-file-description locks
                    None),
})


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
    Syscall("poll", (InOutArray("fds", "pollfd", count="nfds"), Int("nfds"), Int("timeout")), LEADER),
    Syscall("ppoll", (InOutArray("fds", "pollfd", count="nfds"), Int("nfds"), InStruct("tmo", "timespec"),
                      InStruct("sigmask", "sigset"), Int("sigsetsize")), LEADER),
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
    Syscall("dup", (Fd("fd"),), EACH),
    Syscall("dup2", (Fd("oldfd"), Fd("newfd")), EACH),
    Syscall("dup3", (Fd("oldfd"), Fd("newfd"), Flags("flags")), EACH),
    Syscall("fcntl", (Fd("fd"), Int("cmd"), FCNTL_ARGUMENT), EACH),
    Syscall("fcntl64", (Fd("fd"), Int("cmd"), FCNTL_ARGUMENT), EACH, I386_ONLY),
    Syscall("pipe", (OutStruct("fds", "fd_pair"),), EACH),
    Syscall("pipe2", (OutStruct("fds", "fd_pair"), Flags("flags")), EACH),
    Syscall("socket", (Int("domain"), Flags("type"), Int("protocol")), EACH),
    Syscall("connect", (Fd("fd"), SockAddr("addr", length="addrlen"), Int("addrlen")), LEADER),
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
    Syscall("mkdir", (CString("path"), Int("mode")), LEADER),
    Syscall("mkdirat", (AT_FD, CString("path"), Int("mode")), LEADER),
    Syscall("rmdir", (CString("path"),), LEADER),
    Syscall("unlink", (CString("path"),), LEADER),
    Syscall("unlinkat", (AT_FD, CString("path"), Flags("flags")), LEADER),
    Syscall("rename", (CString("oldpath"), CString("newpath")), LEADER),
    Syscall("renameat", (AT_FD, CString("oldpath"), Fd("newdirfd"), CString("newpath")), LEADER),
    Syscall("renameat2", (AT_FD, CString("oldpath"), Fd("newdirfd"), CString("newpath"),
                          Flags("flags")), LEADER),
    Syscall("link", (CString("oldpath"), CString("newpath")), LEADER),
    Syscall("symlink", (CString("target"), CString("linkpath")), LEADER),
    Syscall("chmod", (CString("path"), Int("mode")), LEADER),
    Syscall("fchmod", (Fd("fd"), Int("mode")), LEADER),
    Syscall("fchmodat", (AT_FD, CString("path"), Int("mode")), LEADER),
    Syscall("chown", (CString("path"), Int("owner"), Int("group")), LEADER),
    Syscall("fchown", (Fd("fd"), Int("owner"), Int("group")), LEADER),
    Syscall("lchown", (CString("path"), Int("owner"), Int("group")), LEADER),
    Syscall("fchownat", (AT_FD, CString("path"), Int("owner"), Int("group"), Flags("flags")),
            LEADER),
    Syscall("utimensat", (AT_FD, CString("path"), InStruct("times", "timespec", 2),
                          Flags("flags")), LEADER),
    Syscall("utimensat_time64", (AT_FD, CString("path"), InStruct("times", "timespec64", 2),
                                 Flags("flags")), LEADER, I386_ONLY),
    Syscall("truncate", (CString("path"), Int("length")), LEADER),
    Syscall("getxattr", (CString("path"), CString("name"), OutBuffer("value", length="size"), Int("size")),
            LEADER),
    Syscall("lgetxattr", (CString("path"), CString("name"), OutBuffer("value", length="size"), Int("size")),
            LEADER),
    Syscall("fgetxattr", (Fd("fd"), CString("name"), OutBuffer("value", length="size"), Int("size")), LEADER),
    Syscall("listxattr", (CString("path"), OutBuffer("list", length="size"), Int("size")), LEADER),
    Syscall("llistxattr", (CString("path"), OutBuffer("list", length="size"), Int("size")), LEADER),
    Syscall("flistxattr", (Fd("fd"), OutBuffer("list", length="size"), Int("size")), LEADER),
    # --- memory: each variant shapes its own address space, at its own pace ---
    Syscall("brk", (Addr("addr"),), LOCAL),
    # i386's "mmap" (90) is old_mmap, whose one argument points to these six.
    Syscall("mmap", (Addr("addr"), Int("length"), Flags("prot"), Flags("flags"), Fd("fd"),
                     Int("offset")), EACH, X86_64_ONLY, local_when=("flags", MAP_ANONYMOUS),
            changes_mappings=RANGE),
    Syscall("mmap2", (Addr("addr"), Int("length"), Flags("prot"), Flags("flags"), Fd("fd"),
                      Int("pgoffset")), EACH, I386_ONLY, local_when=("flags", MAP_ANONYMOUS),
            changes_mappings=RANGE),
    Syscall("munmap", (Addr("addr"), Int("length")), LOCAL, changes_mappings=RANGE),
    Syscall("mprotect", (Addr("addr"), Int("length"), Flags("prot")), LOCAL, changes_mappings=RANGE),
    Syscall("madvise", (Addr("addr"), Int("length"), Int("advice")), LOCAL, changes_mappings=RANGE),
    Syscall("mremap", (Addr("old_address"), Int("old_size"), Int("new_size"), Flags("flags"),
                       Addr("new_address")), LOCAL, changes_mappings=("old_address", "old_size")),
    # --- the process itself ---
    Syscall("arch_prctl", (Int("code"), Ignored("addr")), EACH),
    Syscall("set_thread_area", (Ignored("u_info"),), EACH),
    Syscall("set_tid_address", (Ignored("tidptr"),), EACH_LEADER_RESULT),
    Syscall("set_robust_list", (Ignored("head"), Int("len")), EACH),
    Syscall("rseq", (Ignored("rseq"), Int("rseq_len"), Flags("flags"), Int("sig")), EACH),
    Syscall("prctl", (Int("option"), Ignored("arg2"), Ignored("arg3"), Ignored("arg4"),
                      Ignored("arg5")), EACH),
    Syscall("prlimit64", (Pid("pid"), Int("resource"), InStruct("new", "rlimit64"),
                          OutStruct("old", "rlimit64")), EACH, foreign_process=LEADER),
    Syscall("getrlimit", (Int("resource"), OutStruct("rlim", "rlimit")), EACH),
    Syscall("ugetrlimit", (Int("resource"), OutStruct("rlim", "rlimit")), EACH, I386_ONLY),
    Syscall("setrlimit", (Int("resource"), InStruct("rlim", "rlimit")), EACH),
    Syscall("personality", (Flags("persona"),), EACH),
    Syscall("sched_yield", (), EACH),
    Syscall("membarrier", (Int("cmd"), Flags("flags"), Int("cpu_id")), EACH),
    # Which futex arguments mean anything depends on the operation; single-threaded
    # variants only wake themselves, so only op and val are compared.
    Syscall("futex", (Ignored("uaddr"), Int("op"), Int("val"), Ignored("timeout"), Ignored("uaddr2"),
                      Ignored("val3")), EACH),
    # After a nanosleep interrupted without a handler; the leader holds the restart block.
    Syscall("restart_syscall", (), LEADER),
    Syscall("exit", (Int("status"),), EACH),
    Syscall("exit_group", (Int("status"),), EACH),
    Syscall("execve", (CString("path"), StringArray("argv"), StringArray("envp")), EACH),
    Syscall("fork", (), UNSUPPORTED),
    Syscall("vfork", (), UNSUPPORTED),
    Syscall("clone", (Flags("flags"), Ignored("stack"), Ignored("parent_tid"), Ignored("tls"),
                      Ignored("child_tid")), UNSUPPORTED),
    Syscall("clone3", (Ignored("args"), Int("size")), UNSUPPORTED),
    # --- identity and the outside world: virtualised to the leader's values ---
    Syscall("getpid", (), LEADER),
    Syscall("getppid", (), LEADER),
    Syscall("gettid", (), LEADER),
    Syscall("getpgrp", (), LEADER),
    Syscall("getpgid", (Pid("pid"),), LEADER),
    Syscall("getsid", (Pid("pid"),), LEADER),
    *(Syscall(name, (), LEADER) for name in ("getuid", "geteuid", "getgid", "getegid")),
    *(Syscall(name, (), LEADER, I386_ONLY) for name in ("getuid32", "geteuid32", "getgid32", "getegid32")),
    Syscall("getgroups", (Int("size"), OutBuffer("list", length="size", unit=4)), LEADER),
    Syscall("getgroups32", (Int("size"), OutBuffer("list", length="size", unit=4)), LEADER,
            I386_ONLY),
    Syscall("getresuid", (OutStruct("r", "int"), OutStruct("e", "int"), OutStruct("s", "int")),
            LEADER),
    Syscall("getresgid", (OutStruct("r", "int"), OutStruct("e", "int"), OutStruct("s", "int")),
            LEADER),
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
    Syscall("clock_gettime", (Int("clockid"), OutStruct("tp", "timespec")), LEADER),
    Syscall("clock_gettime64", (Int("clockid"), OutStruct("tp", "timespec64")), LEADER, I386_ONLY),
    Syscall("clock_getres", (Int("clockid"), OutStruct("res", "timespec")), LEADER),
    Syscall("clock_getres_time64", (Int("clockid"), OutStruct("res", "timespec64")), LEADER,
            I386_ONLY),
    Syscall("nanosleep", (InStruct("req", "timespec"), OutStruct("rem", "timespec")), LEADER),
    Syscall("clock_nanosleep", (Int("clockid"), Flags("flags"), InStruct("req", "timespec"),
                                OutStruct("rem", "timespec")), LEADER),
    Syscall("clock_nanosleep_time64", (Int("clockid"), Flags("flags"),
                                       InStruct("req", "timespec64"),
                                       OutStruct("rem", "timespec64")), LEADER, I386_ONLY),
    Syscall("wait4", (Pid("pid"), OutStruct("status", "int"), Flags("options"),
                      OutStruct("rusage", "rusage")), LEADER),
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
    # Absolute expiries are computed from each variant's own clock read (vDSO), so they
    # differ legitimately; the sigevent holds a layout-dependent sigev_value.
    Syscall("timer_create", (Int("clockid"), Ignored("sevp"), OutStruct("timerid", "int")), LEADER),
    Syscall("timer_settime", (Int("timerid"), Flags("flags"), Ignored("new"), OutStruct("old", "itimerspec")),
            LEADER),
    Syscall("timer_settime64", (Int("timerid"), Flags("flags"), Ignored("new"),
                                OutStruct("old", "itimerspec64")), LEADER, I386_ONLY),
    Syscall("timer_gettime", (Int("timerid"), OutStruct("curr", "itimerspec")), LEADER),
    Syscall("timer_gettime64", (Int("timerid"), OutStruct("curr", "itimerspec64")), LEADER, I386_ONLY),
    Syscall("timer_getoverrun", (Int("timerid"),), LEADER),
    Syscall("timer_delete", (Int("timerid"),), LEADER),
    # i386 multiplexers: their sub-calls would each need their own row.
    Syscall("socketcall", (Int("call"), Ignored("args")), UNSUPPORTED, I386_ONLY),
    Syscall("ipc", (Int("call"), Ignored("first"), Ignored("second"), Ignored("third"),
                    Ignored("ptr"), Ignored("fifth")), UNSUPPORTED, I386_ONLY),
]

# ABI name -> syscall name -> row: what the engine looks a stopped call up in.
BY_ABI: dict[str, dict[str, Syscall]] = {
    abi: {spec.name: spec for spec in TABLE if abi in spec.abis} for abi in ALL_ABIS}
