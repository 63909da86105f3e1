package tests

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reincarnation/rs/internal/resp"
	"github.com/reincarnation/rs/rs/control"
)

// A failed or down service's held listeners turn clients away instead of
// keeping them waiting, and serve again when it is back.

// clientBound is how long a client may take to learn that nobody serves:
// far less than waitTimeout, far more than a refusal takes.
const clientBound = 5 * time.Second

// turnedAway dials network addr and reports how the client was sent
// away: refused at connect, or closed at once. It fails the test if the
// client is left waiting, or served.
func turnedAway(t *testing.T, network, addr string) string {
	t.Helper()
	c, err := net.DialTimeout(network, addr, clientBound)
	if errors.Is(err, syscall.ECONNREFUSED) {
		return "refused"
	}
	if err != nil {
		t.Fatalf("dial %s %s: %v, want refused or closed at once", network, addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(clientBound))
	cl := resp.NewClient(c)
	v, err := cl.Do("PING")
	var ne net.Error
	switch {
	case err == nil:
		t.Fatalf("%s %s served (%v) while nobody should", network, addr, v)
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("%s %s: the client hangs: no answer and no close within %v", network, addr, clientBound)
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "closed"
	default:
		t.Fatalf("%s %s: %v, want refused or closed at once", network, addr, err)
	}
	return ""
}

// listenerInode finds the inode of the socket listening on network addr
// ("tcp" 127.0.0.1:port, or "unix" path), from /proc/net: the listener
// itself, whoever holds it.
func listenerInode(t *testing.T, network, addr string) string {
	t.Helper()
	file, match := "/proc/net/unix", func(f []string) bool {
		// Num RefCount Protocol Flags Type St Inode Path; Flags 00010000: listening.
		return len(f) >= 8 && f[3] == "00010000" && f[7] == addr
	}
	inode := 6
	if network == "tcp" {
		ap := netip.MustParseAddrPort(addr)
		a := ap.Addr().As4()
		local := fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], ap.Port())
		file, inode = "/proc/net/tcp", 9
		match = func(f []string) bool { return len(f) > 9 && f[1] == local && f[3] == "0A" }
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		if f := strings.Fields(line); match(f) {
			return f[inode]
		}
	}
	t.Fatalf("nothing listens on %s %s", network, addr)
	return ""
}

// failAll drives kv services to `failed` by killing each instance once:
// every death counts (backoff_reset is an hour), max_restarts is 1.
func failAll(t *testing.T, r *rsProc, kvs map[string][2]string) {
	t.Helper()
	killed := map[int]bool{}
	for label := range kvs {
		r.waitFor(label+" failed", func() bool {
			switch st := r.status(label); st.State {
			case control.StateFailed:
				return true
			case control.StateRunning:
				if !killed[st.Pid] {
					killed[st.Pid] = true
					syscall.Kill(st.Pid, syscall.SIGKILL)
				}
			}
			return false
		})
	}
}

// TestFailedOrDownTurnsClientsAway: a kv that is failed, or down after
// an exit its restart policy does not restart, holds its listener in
// rs's fd store; clients of its TCP and unix addresses are turned away
// (TCP refused, unix closed at once), not left hanging. `service
// restart` / `up` serve again on the same listener.
func TestFailedOrDownTurnsClientsAway(t *testing.T) {
	tcpAddr := freeAddr(t)
	never := freeAddr(t)
	sock := filepath.Join(t.TempDir(), "kv.sock")
	kv := func(label, addr, extra string) string {
		return fmt.Sprintf(`
[service.%s]
binary = "$BIN/kv"
args = ["--listen", %q, "--allow-faults"]
period = "100ms"
backoff_base = "1ms"
backoff_cap = "1ms"
backoff_reset = "1h"
max_restarts = 1
failed_retry = "0s"
stop_grace = "500ms"
%s
`, label, addr, extra)
	}
	r := startRS(t, kv("kvtcp", tcpAddr, "")+kv("kvunix", "unix:"+sock, "")+kv("kvnever", never, `restart = "never"`))
	kvs := map[string][2]string{"kvtcp": {"tcp", tcpAddr}, "kvunix": {"unix", sock}}
	inodes := map[string]string{}
	for label, na := range kvs {
		r.waitState(label, control.StateRunning, 0)
		kvPing(t, na[0], na[1])
		inodes[label] = listenerInode(t, na[0], na[1])
	}

	failAll(t, r, kvs)
	if how := turnedAway(t, "tcp", tcpAddr); how != "refused" {
		t.Errorf("failed kv over TCP: %s, want refused", how)
	}
	turnedAway(t, "unix", sock)
	for label, na := range kvs {
		r.mustService("restart", label)
		kvPing(t, na[0], na[1])
		if in := listenerInode(t, na[0], na[1]); in != inodes[label] {
			t.Errorf("%s serves on socket %s after restart, was %s: not the held listener", label, in, inodes[label])
		}
	}

	// Failed again, then `up` brings it back the same way.
	failAll(t, r, kvs)
	turnedAway(t, "tcp", tcpAddr)
	turnedAway(t, "unix", sock)
	for label, na := range kvs {
		r.mustService("up", label)
		kvPing(t, na[0], na[1])
		if in := listenerInode(t, na[0], na[1]); in != inodes[label] {
			t.Errorf("%s serves on socket %s after up, was %s", label, in, inodes[label])
		}
	}

	// down closes the fd store: turned away too; up serves again.
	for label, na := range kvs {
		r.mustService("down", label)
		turnedAway(t, na[0], na[1])
		r.mustService("up", label)
		kvPing(t, na[0], na[1])
	}

	// restart = "never": down after a crash, its listener still held.
	st := r.waitState("kvnever", control.StateRunning, 0)
	in := listenerInode(t, "tcp", never)
	kvDo(t, never, "DEBUG", "FAULT", "kill")
	r.waitFor2("kvnever", func(now control.Status) bool { return now.State == control.StateDown && now.Pid != st.Pid })
	if how := turnedAway(t, "tcp", never); how != "refused" {
		t.Errorf("kv down after a crash, over TCP: %s, want refused", how)
	}
	r.mustService("up", "kvnever")
	kvPing(t, "tcp", never)
	if now := listenerInode(t, "tcp", never); now != in {
		t.Errorf("kvnever serves on socket %s after up, was %s", now, in)
	}
}
