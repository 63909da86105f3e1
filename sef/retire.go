package sef

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// retiredNice is the nice value an old instance takes once rs stops it
// after a live update committed: its state and connections are the new
// instance's, and what is left is its exit, whose teardown of the
// address space is the kernel's work in the exiting thread, as long as
// the state is large. At a million kv keys (perf sched, 2026-12-03) the
// old kv's last thread ran 17 ms on one CPU, beginning a few ms after the
// commit, while the new instance answered the requests that had waited
// out the pause. At nice 19 it yields to them. Not SCHED_IDLE: under a
// load that keeps every CPU busy, that would hold the old instance's
// memory for seconds.
const retiredNice = 19

// retire lowers every thread of the process to retiredNice (nice is a
// thread's on Linux; threads made later inherit it). Lowering needs no
// privilege; a thread that cannot be set keeps its priority.
func retire() {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return
	}
	for _, t := range tasks {
		if tid, err := strconv.Atoi(t.Name()); err == nil {
			unix.Setpriority(unix.PRIO_PROCESS, tid, retiredNice)
		}
	}
}
