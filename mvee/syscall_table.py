"""The declarative syscall table: what each syscall's arguments are and who runs it.

Names are ABI-neutral; numbers come from mvee.abi. A syscall missing here stops
the run with an "unsupported" alarm naming it. Rules of thumb behind the policies:
- calls that create file descriptors run in EACH variant, so fd tables stay mirrored;
- calls with effects outside the process (I/O, the file system, the clock, entropy)
  run in the LEADER only, the others get its result and out-buffers;
- calls that shape the process itself (memory, signal dispositions, TLS) run in EACH.
"""

from __future__ import annotations

from mvee.syscall_spec import (
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

AT_FD = Fd("dirfd")
MAP_ANONYMOUS = 0x20

# ioctl requests known to the monitor (asm-generic/ioctls.h); the third argument's kind.
IOCTL_ARGUMENT = Depends("arg", on=1, cases={
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
FCNTL_ARGUMENT = Depends("arg", on=1, default=Int("arg"), cases={
    **dict.fromkeys((1, 3, 9, 11, 1025, 1032, 1034), Ignored("unused")),  # F_GETFD, F_GETFL ...
    **dict.fromkeys((5, 6, 7,  # F_GETLK, F_SETLK, F_SETLKW
                     12, 13, 14,  # the same, 64-bit on i386
                     36, 37, 38),  # open-file-description locks
                    None),
})


def _stat(name: str, struct: str) -> list[Syscall]:
    return [
        Syscall(name, (CString("path"), OutStruct("buf", struct)), LEADER),
        Syscall("l" + name, (CString("path"), OutStruct("buf", struct)), LEADER),
        Syscall("f" + name, (Fd("fd"), OutStruct("buf", struct)), LEADER),
    ]


TABLE: list[Syscall] = [
    # --- reading and writing: the leader performs the I/O once ---
    Syscall("read", (Fd("fd"), OutBuffer("buf", 2), Int("count")), LEADER),
    Syscall("write", (Fd("fd"), InBuffer("buf", 2), Int("count")), LEADER,
            sigpipe_on_epipe=True),
    Syscall("pread64", (Fd("fd"), OutBuffer("buf", 2), Int("count"), Int("offset")), LEADER),
    Syscall("pwrite64", (Fd("fd"), InBuffer("buf", 2), Int("count"), Int("offset")), LEADER,
            sigpipe_on_epipe=True),
    Syscall("readv", (Fd("fd"), IovecOut("iov", 2), Int("iovcnt")), LEADER),
    Syscall("writev", (Fd("fd"), IovecIn("iov", 2), Int("iovcnt")), LEADER,
            sigpipe_on_epipe=True),
    Syscall("lseek", (Fd("fd"), Int("offset"), Int("whence")), LEADER),
    Syscall("_llseek", (Fd("fd"), Int("offset_high"), Int("offset_low"),
                        OutStruct("result", "loff_t"), Int("whence")), LEADER),
    Syscall("getdents64", (Fd("fd"), OutBuffer("dirp", 2), Int("count")), LEADER),
    Syscall("poll", (InOutArray("fds", "pollfd", 1), Int("nfds"), Int("timeout")), LEADER),
    Syscall("ppoll", (InOutArray("fds", "pollfd", 1), Int("nfds"), InStruct("tmo", "timespec"),
                      InStruct("sigmask", "sigset"), Int("sigsetsize")), LEADER),
    Syscall("ioctl", (Fd("fd"), Flags("request"), IOCTL_ARGUMENT), LEADER),
    Syscall("fsync", (Fd("fd"),), LEADER),
    Syscall("fdatasync", (Fd("fd"),), LEADER),
    Syscall("ftruncate", (Fd("fd"), Int("length")), LEADER),
    Syscall("fallocate", (Fd("fd"), Flags("mode"), Int("offset"), Int("len")), LEADER),
    Syscall("copy_file_range", (Fd("fd_in"), Addr("off_in"), Fd("fd_out"), Addr("off_out"),
                                Int("len"), Flags("flags")), LEADER),
    Syscall("sendfile", (Fd("out_fd"), Fd("in_fd"), Addr("offset"), Int("count")), LEADER),
    Syscall("sendfile64", (Fd("out_fd"), Fd("in_fd"), Addr("offset"), Int("count")), LEADER),
    # --- file descriptors: created in each variant, so fd tables stay mirrored ---
    Syscall("open", (CString("path"), Flags("flags"), Int("mode")), LEADER_FIRST),
    Syscall("openat", (AT_FD, CString("path"), Flags("flags"), Int("mode")), LEADER_FIRST),
    Syscall("creat", (CString("path"), Int("mode")), LEADER_FIRST),
    Syscall("close", (Fd("fd"),), EACH_LEADER_RESULT),
    Syscall("dup", (Fd("fd"),), EACH),
    Syscall("dup2", (Fd("oldfd"), Fd("newfd")), EACH),
    Syscall("dup3", (Fd("oldfd"), Fd("newfd"), Flags("flags")), EACH),
    Syscall("fcntl", (Fd("fd"), Int("cmd"), FCNTL_ARGUMENT), EACH),
    Syscall("fcntl64", (Fd("fd"), Int("cmd"), FCNTL_ARGUMENT), EACH),
    Syscall("pipe", (OutStruct("fds", "fd_pair"),), EACH),
    Syscall("pipe2", (OutStruct("fds", "fd_pair"), Flags("flags")), EACH),
    Syscall("socket", (Int("domain"), Flags("type"), Int("protocol")), EACH),
    Syscall("connect", (Fd("fd"), SockAddr("addr", 2), Int("addrlen")), LEADER),
    Syscall("fadvise64", (Fd("fd"), Int("offset"), Int("len"), Int("advice")), EACH),
    Syscall("fadvise64_64", (Fd("fd"), Int("offset_lo"), Int("offset_hi"), Int("len_lo"),
                             Int("len_hi"), Int("advice")), EACH),
    Syscall("umask", (Int("mask"),), EACH),
    Syscall("chdir", (CString("path"),), EACH),
    Syscall("fchdir", (Fd("fd"),), EACH),
    # --- the file system: the leader changes it once ---
    *_stat("stat", "stat"),
    *_stat("stat64", "stat64"),
    Syscall("newfstatat", (AT_FD, CString("path"), OutStruct("buf", "stat"), Flags("flags")),
            LEADER),
    Syscall("fstatat64", (AT_FD, CString("path"), OutStruct("buf", "stat64"), Flags("flags")),
            LEADER),
    Syscall("statx", (AT_FD, CString("path"), Flags("flags"), Flags("mask"),
                      OutStruct("buf", "statx")), LEADER),
    Syscall("statfs", (CString("path"), OutStruct("buf", "statfs")), LEADER),
    Syscall("fstatfs", (Fd("fd"), OutStruct("buf", "statfs")), LEADER),
    Syscall("statfs64", (CString("path"), Int("size"), OutStruct("buf", "statfs64")), LEADER),
    Syscall("fstatfs64", (Fd("fd"), Int("size"), OutStruct("buf", "statfs64")), LEADER),
    Syscall("access", (CString("path"), Int("mode")), LEADER),
    Syscall("faccessat", (AT_FD, CString("path"), Int("mode")), LEADER),
    Syscall("faccessat2", (AT_FD, CString("path"), Int("mode"), Flags("flags")), LEADER),
    Syscall("readlink", (CString("path"), OutBuffer("buf", 2), Int("bufsiz")), LEADER),
    Syscall("readlinkat", (AT_FD, CString("path"), OutBuffer("buf", 3), Int("bufsiz")), LEADER),
    Syscall("getcwd", (OutBuffer("buf", 1), Int("size")), LEADER),
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
                                 Flags("flags")), LEADER),
    Syscall("truncate", (CString("path"), Int("length")), LEADER),
    Syscall("getxattr", (CString("path"), CString("name"), OutBuffer("value", 3), Int("size")),
            LEADER),
    Syscall("lgetxattr", (CString("path"), CString("name"), OutBuffer("value", 3), Int("size")),
            LEADER),
    Syscall("fgetxattr", (Fd("fd"), CString("name"), OutBuffer("value", 3), Int("size")), LEADER),
    Syscall("listxattr", (CString("path"), OutBuffer("list", 2), Int("size")), LEADER),
    Syscall("llistxattr", (CString("path"), OutBuffer("list", 2), Int("size")), LEADER),
    Syscall("flistxattr", (Fd("fd"), OutBuffer("list", 2), Int("size")), LEADER),
    # --- memory: each variant shapes its own address space, at its own pace ---
    Syscall("brk", (Addr("addr"),), LOCAL),
    Syscall("mmap", (Addr("addr"), Int("length"), Flags("prot"), Flags("flags"), Fd("fd"),
                     Int("offset")), EACH, local_when=(3, MAP_ANONYMOUS)),
    Syscall("mmap2", (Addr("addr"), Int("length"), Flags("prot"), Flags("flags"), Fd("fd"),
                      Int("pgoffset")), EACH, local_when=(3, MAP_ANONYMOUS)),
    Syscall("munmap", (Addr("addr"), Int("length")), LOCAL),
    Syscall("mprotect", (Addr("addr"), Int("length"), Flags("prot")), LOCAL),
    Syscall("madvise", (Addr("addr"), Int("length"), Int("advice")), LOCAL),
    Syscall("mremap", (Addr("old_address"), Int("old_size"), Int("new_size"), Flags("flags"),
                       Addr("new_address")), LOCAL),
    # --- the process itself ---
    Syscall("arch_prctl", (Int("code"), Ignored("addr")), EACH),
    Syscall("set_thread_area", (Ignored("u_info"),), EACH),
    Syscall("set_tid_address", (Ignored("tidptr"),), EACH_LEADER_RESULT),
    Syscall("set_robust_list", (Ignored("head"), Int("len")), EACH),
    Syscall("rseq", (Ignored("rseq"), Int("rseq_len"), Flags("flags"), Int("sig")), EACH),
    Syscall("prctl", (Int("option"), Ignored("arg2"), Ignored("arg3"), Ignored("arg4"),
                      Ignored("arg5")), EACH),
    Syscall("prlimit64", (Pid("pid"), Int("resource"), InStruct("new", "rlimit64"),
                          OutStruct("old", "rlimit64")), EACH),
    Syscall("getrlimit", (Int("resource"), OutStruct("rlim", "rlimit")), EACH),
    Syscall("ugetrlimit", (Int("resource"), OutStruct("rlim", "rlimit")), EACH),
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
    *(Syscall(name, (), LEADER) for name in (
        "getuid", "geteuid", "getgid", "getegid",
        "getuid32", "geteuid32", "getgid32", "getegid32")),
    Syscall("getgroups", (Int("size"), OutBuffer("list", 0, unit=4)), LEADER),
    Syscall("getgroups32", (Int("size"), OutBuffer("list", 0, unit=4)), LEADER),
    Syscall("getresuid", (OutStruct("r", "int"), OutStruct("e", "int"), OutStruct("s", "int")),
            LEADER),
    Syscall("getresgid", (OutStruct("r", "int"), OutStruct("e", "int"), OutStruct("s", "int")),
            LEADER),
    Syscall("uname", (OutStruct("buf", "utsname"),), LEADER),
    Syscall("sysinfo", (OutStruct("info", "sysinfo"),), LEADER),
    Syscall("getrandom", (OutBuffer("buf", 1), Int("buflen"), Flags("flags")), LEADER),
    Syscall("getrusage", (Int("who"), OutStruct("usage", "rusage")), LEADER),
    Syscall("times", (OutStruct("buf", "tms"),), LEADER),
    Syscall("sched_getaffinity", (Pid("pid"), Int("cpusetsize"), OutBuffer("mask", 1)), LEADER),
    Syscall("getcpu", (OutStruct("cpu", "int"), OutStruct("node", "int"), Ignored("cache")),
            LEADER),
    Syscall("time", (OutStruct("tloc", "long"),), LEADER),
    Syscall("gettimeofday", (OutStruct("tv", "timeval"), OutStruct("tz", "timezone")), LEADER),
    Syscall("clock_gettime", (Int("clockid"), OutStruct("tp", "timespec")), LEADER),
    Syscall("clock_gettime64", (Int("clockid"), OutStruct("tp", "timespec64")), LEADER),
    Syscall("clock_getres", (Int("clockid"), OutStruct("res", "timespec")), LEADER),
    Syscall("clock_getres_time64", (Int("clockid"), OutStruct("res", "timespec64")), LEADER),
    Syscall("nanosleep", (InStruct("req", "timespec"), OutStruct("rem", "timespec")), LEADER),
    Syscall("clock_nanosleep", (Int("clockid"), Flags("flags"), InStruct("req", "timespec"),
                                OutStruct("rem", "timespec")), LEADER),
    Syscall("clock_nanosleep_time64", (Int("clockid"), Flags("flags"),
                                       InStruct("req", "timespec64"),
                                       OutStruct("rem", "timespec64")), LEADER),
    Syscall("wait4", (Pid("pid"), OutStruct("status", "int"), Flags("options"),
                      OutStruct("rusage", "rusage")), LEADER),
    # --- signals: dispositions and masks belong to each variant ---
    Syscall("rt_sigaction", (Int("sig"), SigAction("act"), Ignored("oldact"), Int("sigsetsize")),
            EACH),
    Syscall("rt_sigprocmask", (Int("how"), InStruct("set", "sigset"), Ignored("oldset"),
                               Int("sigsetsize")), EACH),
    Syscall("sigaltstack", (Addr("ss"), Ignored("old_ss")), EACH),
    Syscall("rt_sigreturn", (), EACH),
    Syscall("sigreturn", (), EACH),
    Syscall("rt_sigsuspend", (InStruct("mask", "sigset"), Int("sigsetsize")), EACH),
    Syscall("pause", (), EACH),
    Syscall("rt_sigpending", (OutStruct("set", "sigset"), Int("sigsetsize")), EACH),
    Syscall("kill", (Pid("pid"), Int("sig")), EACH),
    Syscall("tkill", (Pid("tid"), Int("sig")), EACH),
    Syscall("tgkill", (Pid("tgid"), Pid("tid"), Int("sig")), EACH),
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
                                OutStruct("old", "itimerspec64")), LEADER),
    Syscall("timer_gettime", (Int("timerid"), OutStruct("curr", "itimerspec")), LEADER),
    Syscall("timer_gettime64", (Int("timerid"), OutStruct("curr", "itimerspec64")), LEADER),
    Syscall("timer_getoverrun", (Int("timerid"),), LEADER),
    Syscall("timer_delete", (Int("timerid"),), LEADER),
    # i386 multiplexers: their sub-calls would each need their own row.
    Syscall("socketcall", (Int("call"), Ignored("args")), UNSUPPORTED),
    Syscall("ipc", (Int("call"), Ignored("first"), Ignored("second"), Ignored("third"),
                    Ignored("ptr"), Ignored("fifth")), UNSUPPORTED),
]

BY_NAME: dict[str, Syscall] = {spec.name: spec for spec in TABLE}
