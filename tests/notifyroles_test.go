package tests

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Notify services that do what go-systemd's daemon package cannot (send
// files), speaking sd_notify by hand.

// notifySend sends one datagram to $NOTIFY_SOCKET with files attached.
func notifySend(text string, files ...*os.File) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	return unix.Sendmsg(fd, []byte(text), oob, &unix.SockaddrUnix{Name: os.Getenv("NOTIFY_SOCKET")}, 0)
}

func notifyRole(role string, args []string) int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	fail := func(err error) int { fmt.Fprintln(os.Stderr, role+":", err); return 1 }
	switch role {
	case "notify-fds":
		// Started again with its fd store: the stored pipe end comes
		// back at fd 3 as systemd hands it (LISTEN_FDS, LISTEN_FDNAMES,
		// LISTEN_PID); it says so in its status.
		if os.Getenv("LISTEN_FDNAMES") != "" {
			var st unix.Stat_t
			got := fmt.Sprintf("got %s=%s pid=%v", os.Getenv("LISTEN_FDNAMES"), os.Getenv("LISTEN_FDS"),
				os.Getenv("LISTEN_PID") == strconv.Itoa(os.Getpid()))
			if err := unix.Fstat(3, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
				got += " (fd 3 not a pipe)"
			}
			if err := notifySend("READY=1\nSTATUS=" + got); err != nil {
				return fail(err)
			}
			break
		}
		// A barrier first: rs closes the fd that comes with it, which
		// this end sees as a hang-up; then two fds into the store, one
		// of them removed again, and READY=1.
		r, w, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		if err := notifySend("BARRIER=1", w); err != nil {
			return fail(err)
		}
		w.Close()
		fds := []unix.PollFd{{Fd: int32(r.Fd()), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, 10000); err != nil || fds[0].Revents&unix.POLLHUP == 0 {
			return fail(fmt.Errorf("barrier not closed by rs: %v %v", fds[0].Revents, err))
		}
		a, b, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		if err := notifySend("FDSTORE=1\nFDNAME=keep", a); err != nil {
			return fail(err)
		}
		if err := notifySend("FDSTORE=1\nFDNAME=drop", b); err != nil {
			return fail(err)
		}
		if err := notifySend("FDSTOREREMOVE=1\nFDNAME=drop"); err != nil {
			return fail(err)
		}
		// Without FDSTORE=1 a file is not stored.
		if err := notifySend("FDNAME=stray", a); err != nil {
			return fail(err)
		}
		// Over 4 KiB, and with a NUL: dropped whole (and counted).
		if err := notifySend("STATUS=" + strings.Repeat("x", 5000)); err != nil {
			return fail(err)
		}
		if err := notifySend("STATUS=nul\x00READY=1"); err != nil {
			return fail(err)
		}
		if err := notifySend("READY=1\nSTATUS=stored"); err != nil {
			return fail(err)
		}
	case "notify-mainpid":
		// The main process is a child in its group: MAINPID= names it,
		// and its pid goes to args[0]; it writes "term" to args[1] when
		// SIGTERM reaches it.
		child := exec.Command("sh", "-c", `trap 'echo term > "$0"; exit 0' TERM; while :; do sleep 0.05; done`, args[1])
		if err := child.Start(); err != nil {
			return fail(err)
		}
		if err := notifySend(fmt.Sprintf("MAINPID=%d\nREADY=1", child.Process.Pid)); err != nil {
			return fail(err)
		}
		if err := writeAtomic(args[0], strconv.Itoa(child.Process.Pid)); err != nil {
			return fail(err)
		}
		go child.Wait() // reaped here; the role itself lives on
	case "notify-mainpid-back":
		// MAINPID= names a child, then the role itself again: the stop
		// signal is then the role's (it writes "leader" to args[0]), not
		// the child's (which would write "term" to args[1]).
		child := exec.Command("sh", "-c", `trap 'echo term > "$0"; exit 0' TERM; while :; do sleep 0.05; done`, args[1])
		if err := child.Start(); err != nil {
			return fail(err)
		}
		go child.Wait()
		if err := notifySend(fmt.Sprintf("MAINPID=%d\nREADY=1", child.Process.Pid)); err != nil {
			return fail(err)
		}
		if err := notifySend(fmt.Sprintf("MAINPID=%d\nSTATUS=back", os.Getpid())); err != nil {
			return fail(err)
		}
		<-sigs
		if err := writeAtomic(args[0], "leader"); err != nil {
			return fail(err)
		}
		return 0
	}
	select {
	case <-sigs:
		return 0
	case <-time.After(time.Hour):
		return 0
	}
}
