// Package proc starts and ends service processes and owns their fds.
//
// Start puts each service in its own process group with stdin on
// /dev/null, rs's stdout and stderr (or the files given), and the files
// of Spec.Files from fd 3 on; every other fd of rs is close-on-exec, so
// nothing else leaks in. What those files are (rs's channel to the
// service, a listening socket) is the caller's business. Children get
// PR_SET_PDEATHSIG SIGKILL from a fork thread that never exits, so a
// service dies with rs even when rs is SIGKILLed.
//
// Limits from the first instruction. A child with rlimits to set (or v1
// cgroups to join) calls PTRACE_TRACEME just before execve; a successful
// execve stops it with SIGTRAP before the new program's first
// instruction. The fork thread, its tracer, waits for that stop
// (waitid WSTOPPED|__WALL, WNOWAIT for exits), sets the rlimits with
// prlimit, writes the pid into the v1 cgroups and detaches with no
// signal. So neither a big mmap at the program's start nor a child it
// forks at once runs unlimited. Where PTRACE_TRACEME is refused (EPERM:
// Yama ptrace_scope 3, a seccomp filter) Start logs it once and from then
// on applies them right after exec, as a fallback that a program can race.
// The stop costs one wait and one ptrace call on the fork thread
// (BenchmarkStart).
//
// Containment. InitContainment (rs calls it at start; Start does on
// first use) reads /proc/self/mountinfo and /proc/self/cgroup. Where
// cgroup v2 is mounted and rs can make a directory in its own v2 cgroup
// (the 0:: line), rs's subtree is <own cgroup>/rs-<pid>-<start
// time>-<pid namespace>, the start time being field 22 of
// /proc/<pid>/stat and the namespace the inode of /proc/self/ns/pid.
// rs holds an flock on its subtree's directory for its life: a subtree
// whose lock is free and whose rs is not alive (by pid and start time,
// in rs's own pid namespace; from another namespace, where rs cannot see
// the pid, by the free lock alone, once it holds cgroups) is known to be
// an orphan's, and one whose rs is alive is never touched, whatever pid
// namespace either rs is in (two rs that are pid 1 of two containers
// sharing a cgroup parent, say). Before making its
// own, rs kills (cgroup.kill) and removes every subtree there of an rs
// that is gone: the orphans an rs that was SIGKILLed left behind (its
// leaders died by PDEATHSIG, their groups with them, but a setsid
// grandchild did not). Each instance is then born into a leaf
// <subtree>/<name>.<n> (clone3 CLONE_INTO_CGROUP, Process.Cgroup), so
// none of its descendants can leave it. Without cgroup v2, cgroup.kill
// (Linux 5.14) or write access, containment is by process group alone
// (Info.Mode says which). v2's rule against processes in a cgroup with
// controllers does not bite: rs's subtree holds none, and it enables
// there only the memory and pids controllers its parent hands down.
//
// Limits by cgroup. Spec.Memory and Spec.Pids bound the whole tree: in
// the v2 leaf (memory.max with memory.swap.max 0, pids.max) where the
// subtree has those controllers, else in per-instance cgroups of the same
// name under rs's own cgroup in the v1 memory and pids hierarchies
// (memory.limit_in_bytes, pids.max), which the child joins at its exec
// stop. Without a controller the limit is not set there; the caller
// still has rlimits. Exit.OOMKills is the memory controller's own count
// (v2 memory.events oom_kill, v1 memory.oom_control oom_kill), read by
// the waiter once the instance is gone.
//
// Each Process has exactly one waiter, a goroutine started by Start that
// ends when the child is reaped. Where the kernel has pidfds the waiter
// sleeps in the runtime's poller on the pidfd, so a thousand children
// cost a thousand parked goroutines, not a thousand threads. When the
// leader exits the waiter first sends SIGKILL to the rest of its group,
// while the leader, still a zombie, keeps the group id from being reused,
// and writes cgroup.kill of its leaf; it reaps the leader, then waits
// (poll on cgroup.events, bounded) for `populated 0`, reads the OOM
// count and removes the instance's cgroups. Only then is Done closed: a
// service's children, setsid or not, never outlive it. The cgroup work
// is all on the spawning goroutine, the fork thread and the waiter,
// never on the caller's loop. ReleaseContainment, at rs's end, kills
// and removes whatever is left of its subtree.
//
// What else the child gets. Spec.Credential (uid, gid, groups) through
// SysProcAttr. Spec.Umask: the spawner thread has a filesystem context
// of its own (unshare(CLONE_FS) when it starts; the runtime makes no
// thread from a locked one), so it sets the child's umask around the
// fork without touching rs's. Spec.PidEnv: LISTEN_PID, WATCHDOG_PID are
// the child's own pid, written at the exec stop over placeholders in the
// new program's environment (pidenv.go), so no shim exec is needed; where
// ptrace is refused such a start fails.
//
// Signals. Every signal rs sends a service goes to its whole process
// group with kill(-pgid) (SignalGroup, Kill, Stop), and only while the
// leader is not yet reaped, so the group id cannot belong to anyone else.
// Signal, to the leader alone, goes through the pidfd where there is one.
//
// Orphans (reaper.go). rs is a child subreaper (SetSubreaper), or PID 1
// of a container: orphans of its services are reparented to it. The
// Reaper, woken by SIGCHLD, reaps them, and never a child of rs's own:
// every fork (Start; StartCmd for os/exec) holds forkMu shared from
// before the fork until its pid is registered as owned, and a pid leaves
// owned only once its own waiter reaped it; the reaper holds forkMu
// alone while it lists /proc/self/task/*/children and reaps, with
// waitid(P_PID, WEXITED|WNOHANG), only pids nobody owns.
//
// Stop bounds the end of a process: ask it (rs sends the stop message),
// then SIGTERM to the group, then SIGKILL, each after a grace period.
package proc
