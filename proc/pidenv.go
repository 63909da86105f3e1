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

// LISTEN_PID (and WATCHDOG_PID) without a shim. sd_listen_fds(3) wants LISTEN_PID to be
// the service's own pid, which only the child knows before its exec;
// Go's StartProcess runs no code of ours there. So the child is started
// with placeholders as the last entries of its environment and stopped at
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

// pidPlaceholder is the value a pid is written over: room for any pid
// (pid_max is at most 2^22, seven digits).
const pidPlaceholder = "XXXXXXXXXX"

var errNoExecStop = errors.New("LISTEN_PID and WATCHDOG_PID need the child stopped at its exec, and ptrace is refused (EPERM)")

// withPidPlaceholders returns env with NAME=<placeholder> for each of
// names at its end.
func withPidPlaceholders(env, names []string) []string {
	if len(names) == 0 {
		return env
	}
	env = env[:len(env):len(env)]
	for _, n := range names {
		env = append(env, n+"="+pidPlaceholder)
	}
	return env
}

// writePidEnv writes pid over the placeholders, the last n entries of
// env, in the stopped child pid.
func writePidEnv(pid int, env []string, n int) error {
	if n == 0 {
		return nil
	}
	at, err := envStart(pid)
	if err != nil {
		return fmt.Errorf("pid in the environment: %w", err)
	}
	for _, e := range env[:len(env)-n] {
		at += uintptr(len(e)) + 1
	}
	for _, e := range env[len(env)-n:] {
		if err := writePid(pid, at, e); err != nil {
			return err
		}
		at += uintptr(len(e)) + 1
	}
	return nil
}

// writePid checks that entry (NAME=placeholder) is at at in the child's
// memory and writes pid over its value, NUL-padded.
func writePid(pid int, at uintptr, entry string) error {
	name, _, _ := strings.Cut(entry, "=")
	want := []byte(entry)
	got := make([]byte, len(want))
	if n, err := unix.ProcessVMReadv(pid, []unix.Iovec{iovec(got)}, []unix.RemoteIovec{{Base: at, Len: len(got)}}, 0); err != nil || n != len(got) {
		return fmt.Errorf("%s: read the child's environment: %d bytes, %v", name, n, err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s: the child's environment is not where the kernel puts it (found %q)", name, got)
	}
	val := make([]byte, len(pidPlaceholder))
	copy(val, strconv.Itoa(pid)) // the rest stays NUL
	remote := []unix.RemoteIovec{{Base: at + uintptr(len(name)+1), Len: len(val)}}
	if n, err := unix.ProcessVMWritev(pid, []unix.Iovec{iovec(val)}, remote, 0); err != nil || n != len(val) {
		return fmt.Errorf("%s: write the child's environment: %d bytes, %v", name, n, err)
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
	v, ok := statField(b, 50)
	if !ok || v == 0 {
		return 0, errors.New("/proc/<pid>/stat has no env_start (Linux before 3.5?)")
	}
	return uintptr(v), nil
}
