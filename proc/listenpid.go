package proc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LISTEN_PID without a shim. sd_listen_fds(3) wants LISTEN_PID to be
// the service's own pid, which only the child knows before its exec;
// Go's StartProcess runs no code of ours there. So the child is started
// with a placeholder as the last entry of its environment and stopped at
// its exec (the exec stop of Start, before its first instruction); the
// tracer finds the placeholder in the new program's memory (the kernel
// lays the environment's strings out in order from mm->env_start, field
// 50 of /proc/<pid>/stat), checks that it is there, and writes the pid
// over it, NUL-padded. Nothing in the child has run yet, so nothing has
// read the old value. The cost is the exec stop's wait and ptrace
// detach, one read of /proc/<pid>/stat and two process_vm calls
// (BenchmarkStartListenPID beside BenchmarkStart). Where ptrace is
// refused the start fails with errNoExecStop: a LISTEN_PID written
// after the program started would race it.

// listenPIDPlaceholder is the environment entry the pid is written over:
// room for any pid (pid_max is at most 2^22, seven digits).
const listenPIDPlaceholder = "LISTEN_PID=XXXXXXXXXX"

var errNoExecStop = errors.New("LISTEN_PID needs the child stopped at its exec, and ptrace is refused (EPERM)")

// writeListenPID writes pid over the placeholder, the last entry of env,
// in the stopped child pid.
func writeListenPID(pid int, env []string) error {
	at, err := envStart(pid)
	if err != nil {
		return fmt.Errorf("LISTEN_PID: %w", err)
	}
	for _, e := range env[:len(env)-1] {
		at += uintptr(len(e)) + 1
	}
	want := []byte(listenPIDPlaceholder)
	got := make([]byte, len(want))
	if n, err := unix.ProcessVMReadv(pid, []unix.Iovec{iovec(got)}, []unix.RemoteIovec{{Base: at, Len: len(got)}}, 0); err != nil || n != len(got) {
		return fmt.Errorf("LISTEN_PID: read the child's environment: %d bytes, %v", n, err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("LISTEN_PID: the child's environment is not where the kernel puts it (found %q)", got)
	}
	val := make([]byte, len(want)-len("LISTEN_PID="))
	copy(val, strconv.Itoa(pid)) // the rest stays NUL
	remote := []unix.RemoteIovec{{Base: at + uintptr(len("LISTEN_PID=")), Len: len(val)}}
	if n, err := unix.ProcessVMWritev(pid, []unix.Iovec{iovec(val)}, remote, 0); err != nil || n != len(val) {
		return fmt.Errorf("LISTEN_PID: write the child's environment: %d bytes, %v", n, err)
	}
	return nil
}

func iovec(b []byte) unix.Iovec {
	v := unix.Iovec{Base: &b[0]}
	v.SetLen(len(b))
	return v
}

// envStart reads env_start, field 50 of /proc/<pid>/stat.
func envStart(pid int) (uintptr, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc/<pid>/stat")
	}
	f := strings.Fields(string(b[i+1:])) // fields 3 on
	if len(f) < 48 {
		return 0, errors.New("/proc/<pid>/stat has no env_start (Linux before 3.5)")
	}
	v, err := strconv.ParseUint(f[47], 10, 64)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("env_start %q unreadable", f[47])
	}
	return uintptr(v), nil
}
