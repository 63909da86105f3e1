package campaign

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// procStat is what /proc/<pid>/stat says about a process.
type procStat struct {
	state byte // R, S, D, T, Z, ...
	ppid  int
}

func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	// The command name is in parentheses and may hold anything.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 || len(f[0]) != 1 {
		return procStat{}, false
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, false
	}
	return procStat{state: f[0][0], ppid: ppid}, true
}

// children lists the pids whose parent is pid, live and zombie.
func children(pid int) (live, zombies []int) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, ok := readStat(n)
		if !ok || st.ppid != pid {
			continue
		}
		if st.state == 'Z' {
			zombies = append(zombies, n)
		} else {
			live = append(live, n)
		}
	}
	return live, zombies
}

// cmdline returns a process's arguments joined by NULs ("" if gone).
func cmdline(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return string(b)
}

var errNotChild = errors.New("not a child of rs")

// child is a process pinned by a pidfd, so that a signal never reaches a
// stranger that got the pid after it was reaped.
type child struct {
	pid int
	fd  int
}

// openChild pins pid, which must be a child of parent: the pidfd is opened
// first and the parent checked after, so the check is about the process
// the pidfd refers to.
func openChild(pid, parent int) (*child, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("pid %d: %w", pid, errNotChild)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd of %d: %w", pid, err)
	}
	if st, ok := readStat(pid); !ok || st.ppid != parent {
		unix.Close(fd)
		return nil, fmt.Errorf("pid %d: %w %d", pid, errNotChild, parent)
	}
	return &child{pid: pid, fd: fd}, nil
}

// signal sends sig; ESRCH means the process has been reaped already.
func (c *child) signal(sig syscall.Signal) error {
	return unix.PidfdSendSignal(c.fd, sig, nil, 0)
}

// zombie reports whether the process has exited (and not been reaped).
func (c *child) zombie() bool {
	st, ok := readStat(c.pid)
	return !ok || st.state == 'Z'
}

func (c *child) close() { unix.Close(c.fd) }

// killChild is openChild + SIGKILL + close. It reports whether the signal
// reached a process that had not exited yet.
func killChild(pid, parent int) (bool, error) {
	c, err := openChild(pid, parent)
	if err != nil {
		return false, err
	}
	defer c.close()
	wasAlive := !c.zombie()
	if err := c.signal(syscall.SIGKILL); err != nil {
		return false, err
	}
	return wasAlive, nil
}
