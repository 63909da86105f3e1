package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/rs"
	"github.com/reincarnation/rs/rs/metrics"
)

// selfEnv is what an exec in place left in the environment: the
// table's memfd, an fd of the old binary, and on a rollback why.
type selfEnv struct {
	table, old, rollback string
}

// takeSelfEnv reads the exec's variables and unsets them: the services
// must not see them.
func takeSelfEnv() selfEnv {
	e := selfEnv{table: os.Getenv(rs.EnvTable), old: os.Getenv(rs.EnvOldExe), rollback: os.Getenv(rs.EnvRollback)}
	for _, k := range []string{rs.EnvTable, rs.EnvOldExe, rs.EnvRollback} {
		os.Unsetenv(k)
	}
	return e
}

// close closes the table's memfd and the old binary's fd, once the
// table is adopted.
func (e selfEnv) close() {
	for _, v := range []string{e.table, e.old} {
		if fd, err := strconv.Atoi(v); err == nil && fd > 2 {
			unix.Close(fd)
		}
	}
}

// inheritUnix is the control socket that crossed the exec as fd.
func inheritUnix(fd int) (*net.UnixListener, error) {
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "control")
	defer f.Close() // FileListener dups it
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("control socket from the rs before: %w", err)
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("control socket from the rs before: not a unix socket")
	}
	return ul, nil
}

// inheritMetrics serves metrics on the listener that crossed the exec.
func inheritMetrics(fd int, srv *rs.Server, log *slog.Logger) (*metrics.Server, error) {
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "metrics")
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("metrics listener from the rs before: %w", err)
	}
	return metrics.On(l, metrics.New(statusOf(srv), 0), log), nil
}

// rawFD is the listener's descriptor (it stays its owner's).
func rawFD(l syscall.Conn) int {
	fd := -1
	if rc, err := l.SyscallConn(); err == nil {
		rc.Control(func(u uintptr) { fd = int(u) })
	}
	return fd
}
