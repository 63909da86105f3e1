package tests

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/rs/control"
)

// TestRSKilledLeavesNoService: rs dies by SIGKILL, so it cannot stop
// anything; its services must die with it all the same.
func TestRSKilledLeavesNoService(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, kvConfig(addr, "")+`
[service.plain]
binary = "$BIN/roles"
args = ["-role", "plain"]
`)
	pids := []int{r.waitState("kv", control.StateRunning, 0).Pid, r.waitState("plain", control.StateRunning, 0).Pid}
	r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.done
	// Not r.waitFor: that one gives up as soon as rs has exited, and here
	// rs is gone on purpose while its services are still dying.
	deadline := time.Now().Add(waitTimeout)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("pid %d outlived rs by %v", pid, waitTimeout)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// TestControlSocketHostileClients: garbage, truncated and empty requests
// get an error and rs carries on; a client that connects and says nothing
// does not hold up the others.
func TestControlSocketHostileClients(t *testing.T) {
	r := startRS(t, "")
	silent, err := net.Dial("unixpacket", r.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	for _, pkt := range [][]byte{{0xc1}, {0x81, 0xa2, 'o'}, []byte("status\n"), {0x80}, make([]byte, 70000)} {
		c, err := net.Dial("unixpacket", r.sock)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(waitTimeout))
		if _, err := c.Write(pkt); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		c.Close()
		if err != nil || !strings.Contains(string(buf[:n]), "bad request") {
			t.Errorf("request %x...: reply %q, %v", pkt[:1], buf[:n], err)
		}
	}
	// With the silent client still connected, others are served.
	if _, err := r.client().Do(control.Request{Op: control.OpStatus}, nil); err != nil {
		t.Fatalf("status while a client sits silent: %v", err)
	}
}

// TestFloodingServiceDoesNotStallRS: a service floods rs with valid
// packets as fast as it can; rs keeps answering its operator, and its
// fds do not pile up.
func TestFloodingServiceDoesNotStallRS(t *testing.T) {
	r := startRS(t, "")
	// Warm up: the first spawn opens what rs keeps for good.
	r.mustService("up", "--binary", bin("roles"), "--args", "-role plain", "warmup")
	r.mustService("down", "warmup")
	before := fdCount(t, r.cmd.Process.Pid)
	r.mustService("up", "--binary", bin("roles"), "--args", "-role flood", "--restart", "never", "flood")
	var worst time.Duration
	for i := 0; i < 50; i++ {
		begin := time.Now()
		r.status("flood")
		worst = max(worst, time.Since(begin))
	}
	t.Logf("slowest of 50 status round trips during the flood: %v", worst)
	r.mustService("down", "flood")
	// Packets in flight hold their fds until rs has read them; once the
	// flood is over every one of them must be closed.
	fdsBackTo(t, r.cmd.Process.Pid, before, "over the flood")
}

// A service that pushes fds nobody asked for is faulty, and the fds are
// closed, not kept: rs's fd count is back where it was.
func TestUnaskedFDsAreClosed(t *testing.T) {
	r := startRS(t, "")
	before := fdCount(t, r.cmd.Process.Pid)
	for i := 0; i < 20; i++ {
		r.service("up", "--binary", bin("roles"), "--args", "-role fdpusher", "--restart", "never", "pusher")
		r.waitFor("the pusher to be caught", func() bool {
			st := r.status("pusher")
			return st.State == control.StateDown || st.State == control.StateFailed
		})
	}
	if st := r.status("pusher"); !strings.Contains(st.LastExit, "fds do not match") {
		t.Errorf("last_exit %q", st.LastExit)
	}
	fdsBackTo(t, r.cmd.Process.Pid, before, "over 20 faulty pushers")
}

// TestResourceLimits: a service that runs into its limit is reincarnated
// like any crash, and last_exit says which limit.
func TestResourceLimits(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, `
[service.cpu]
binary = "$BIN/roles"
args = ["-role", "cpuhog"]
period = "0s"
cpu_time = "1s"
`)
	r.mustService("up", "--binary", bin("roles"), "--args", "-role fdhog", "--period", "0s", "--open-files", "64", "fds")
	// kv (built without the race detector, whose shadow memory would
	// count) under a memory limit, then fed until it bursts.
	r.mustService("up", "--binary", bin("kv"), "--args", "--listen "+addr, "--memory", "160MiB", "mem")
	pid := r.status("mem").Pid
	c := dialKV(t, addr)
	big := strings.Repeat("x", 4<<20)
	for i := 0; ; i++ {
		if _, err := c.Do("SET", fmt.Sprint("k", i), big); err != nil {
			break // kv died of it
		}
		if i > 200 {
			t.Fatal("kv stored 800 MiB under a 160 MiB limit")
		}
	}
	cases := []struct{ label, want string }{
		{"mem", "(memory limit 160 MiB in force)"},
		{"fds", "terminated: exit 3"},
		{"cpu", "cpu-limit: SIGKILL after"},
	}
	for _, c := range cases {
		st := r.waitFor2(c.label, func(st control.Status) bool { return st.Restarts >= 1 && st.LastExit != "" })
		if !strings.Contains(st.LastExit, c.want) {
			t.Errorf("%s: last_exit %q, want %q", c.label, st.LastExit, c.want)
		}
	}
	if st := r.status("mem"); st.Pid == pid {
		t.Errorf("kv was not reincarnated after its memory ran out")
	}
}

// TestStuckStderrDoesNotStallRS: rs's stderr is a pipe nobody reads (a
// paused terminal, a stuck log shipper). rs's own log lines must not
// stop its loop: a crash-looping service goes on being reincarnated and
// status goes on answering, long after the pipe is full.
func TestStuckStderrDoesNotStallRS(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "rs.sock")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	// The smallest pipe the kernel gives: full after a few crashes.
	if _, err := unix.FcntlInt(pw.Fd(), unix.F_SETPIPE_SZ, 4096); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin("rs"), "--socket", sock, "--log-level", "debug", "--log-dir", filepath.Join(dir, "log"))
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		go io.Copy(io.Discard, pr) // let it say goodbye
		select {
		case <-done:
		case <-time.After(waitTimeout):
			cmd.Process.Kill()
			t.Error("rs did not exit on SIGTERM")
		}
	}()
	c := control.Client{Socket: sock, Timeout: waitTimeout}
	deadline := time.Now().Add(waitTimeout)
	for _, err := c.Do(control.Request{Op: control.OpStatus}, nil); err != nil; _, err = c.Do(control.Request{Op: control.OpStatus}, nil) {
		if time.Now().After(deadline) {
			t.Fatalf("rs did not come up: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	up := func(label string, extra ...string) {
		args := append([]string{"--socket", sock, "up", "--binary", bin("roles"), "--backoff-base", "1ms", "--backoff-cap", "1ms", "--max-restarts", "-1"}, extra...)
		out, err := exec.Command(bin("service"), append(args, label)...).CombinedOutput()
		if err != nil {
			t.Fatalf("up %s: %v: %s", label, err, out)
		}
	}
	up("crashy", "--args", "-role exit-after-init")
	up("plain", "--args", "-role plain")
	// Each crash is five or so log lines; 4 KiB hold a few dozen, so 40
	// crashes are well past a full pipe (100 took longer than the wait
	// on a machine at load 12, before and after issue 10 alike).
	for {
		rep, err := c.Do(control.Request{Op: control.OpStatus, Label: "crashy"}, nil)
		if err != nil {
			t.Fatalf("status with rs's stderr stuck: %v", err)
		}
		if rep.Services[0].Restarts >= 40 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d restarts in %v with rs's stderr stuck", rep.Services[0].Restarts, waitTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLingeringFDDoesNotFreezeRS: a service hands rs a TCP socket with
// SO_LINGER set and unsent data (its peer does not read), then replaces
// it under the same name. rs closes the old one, and that close waits out
// the linger time, a minute; it happens off rs's loop, so status answers
// and an innocent service killed meanwhile is reincarnated at once.
func TestLingeringFDDoesNotFreezeRS(t *testing.T) {
	// A small receive buffer set before listening, so that the accepted
	// connection's window is small from the start.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
	}}
	l, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := l.(*net.TCPListener)
	defer ln.Close()
	held := make(chan net.Conn, 1)
	go func() {
		c, err := ln.AcceptTCP()
		if err == nil {
			held <- c // never read
		}
	}()
	defer func() {
		select {
		case c := <-held:
			c.Close() // unread data: a reset, which ends the lingering close
		default:
		}
	}()
	r := startRS(t, "")
	r.mustService("up", "--binary", bin("roles"), "--args", "-role plain", "plain")
	plain := r.status("plain")
	r.mustService("up", "--binary", bin("roles"), "--args", "-role linger "+ln.Addr().String(), "linger")
	r.waitFor("the lingering socket to be replaced", func() bool {
		return strings.Count(r.log.String(), `msg="fd stored" label=linger name=sock`) >= 2
	})
	rep, err := r.client().Do(control.Request{Op: control.OpStatus}, nil)
	if err != nil {
		t.Fatalf("status while rs closes a lingering socket: %v", err)
	}
	if rep.Daemon.Closing < 1 {
		t.Errorf("status says %d fds are being closed; want the lingering socket", rep.Daemon.Closing)
	}
	syscall.Kill(plain.Pid, syscall.SIGKILL)
	r.waitState("plain", control.StateRunning, plain.Pid)
}
