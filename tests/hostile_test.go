package tests

import (
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"rs/rs"
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
	pids := []int{r.waitState("kv", rs.StateRunning, 0).Pid, r.waitState("plain", rs.StateRunning, 0).Pid}
	r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.done
	for _, pid := range pids {
		r.waitFor("the service to die with rs", func() bool { return !alive(pid) })
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
	if _, err := r.client().Do(rs.Request{Op: rs.OpStatus}, nil); err != nil {
		t.Fatalf("status while a client sits silent: %v", err)
	}
}

// TestFloodingServiceDoesNotStallRS: a service floods rs with valid
// packets as fast as it can; rs keeps answering its operator, and its
// fds do not pile up.
func TestFloodingServiceDoesNotStallRS(t *testing.T) {
	r := startRS(t, `
[service.flood]
binary = "$BIN/roles"
args = ["-role", "flood"]
restart = "never"
`)
	r.waitState("flood", rs.StateRunning, 0)
	before := fdCount(t, r.cmd.Process.Pid)
	var worst time.Duration
	for i := 0; i < 50; i++ {
		begin := time.Now()
		r.status("flood")
		worst = max(worst, time.Since(begin))
	}
	t.Logf("slowest of 50 status round trips during the flood: %v", worst)
	if after := fdCount(t, r.cmd.Process.Pid); after > before+2 {
		t.Errorf("rs fds grew from %d to %d during the flood", before, after)
	}
	r.mustService("down", "flood")
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
			return st.State == rs.StateDown || st.State == rs.StateFailed
		})
	}
	if st := r.status("pusher"); !strings.Contains(st.LastExit, "fds do not match") {
		t.Errorf("last_exit %q", st.LastExit)
	}
	if after := fdCount(t, r.cmd.Process.Pid); after > before {
		t.Errorf("rs fds grew from %d to %d", before, after)
	}
}
