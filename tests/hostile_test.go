package tests

import (
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

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
