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
// Each Process has exactly one waiter, a goroutine started by Start that
// ends when the child is reaped. Where the kernel has pidfds the waiter
// sleeps in the runtime's poller on the pidfd, so a thousand children
// cost a thousand parked goroutines, not a thousand threads. When the
// leader exits the waiter first sends SIGKILL to the rest of its group,
// while the leader, still a zombie, keeps the group id from being reused,
// and only then reaps it: a service's children never outlive it.
//
// Signals. Every signal rs sends a service goes to its whole process
// group with kill(-pgid) (SignalGroup, Kill, Stop), and only while the
// leader is not yet reaped, so the group id cannot belong to anyone else.
// Signal, to the leader alone, goes through the pidfd where there is one.
//
// Stop bounds the end of a process: ask it (rs sends the stop message),
// then SIGTERM to the group, then SIGKILL, each after a grace period.
package proc
