package tests

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reincarnation/rs/internal/resp"
	"github.com/reincarnation/rs/rs/control"
)

// Only crash loops count toward `failed`; failed_retry tries a failed
// service again.

// kvPing runs PING on a new connection to network addr.
func kvPing(t *testing.T, network, addr string) {
	t.Helper()
	c, err := resp.Dial(network, addr, waitTimeout)
	if err != nil {
		t.Fatalf("dial kv %s %s: %v", network, addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitTimeout))
	if v, err := c.Do("PING"); err != nil || v.Str != "PONG" {
		t.Fatalf("PING %s %s: %v, %v", network, addr, v, err)
	}
}

// TestHealthyDeathsDoNotFail: a service that ran healthy (backoff_reset)
// before each death is never failed, however often it dies; the restarts
// column still counts every restart.
func TestHealthyDeathsDoNotFail(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, `
[service.kv]
binary = "$BIN/kv"
args = ["--listen", "`+addr+`"]
period = "100ms"
backoff_base = "1ms"
backoff_cap = "1ms"
backoff_reset = "200ms"
max_restarts = 3
failed_retry = "0s"
`)
	st := r.waitState("kv", control.StateRunning, 0)
	const kills = 15
	for i := range kills {
		st = r.waitFor2("kv", func(now control.Status) bool {
			return now.State == control.StateFailed || now.State == control.StateRunning && now.UptimeS >= 0.2
		})
		if st.State == control.StateFailed {
			t.Fatalf("failed after %d deaths of healthy runs: %+v", i, st)
		}
		syscall.Kill(st.Pid, syscall.SIGKILL)
		old := st.Pid
		st = r.waitFor2("kv", func(now control.Status) bool {
			return now.State == control.StateFailed || now.State == control.StateRunning && now.Pid != old
		})
		if st.State == control.StateFailed {
			t.Fatalf("failed after %d deaths of healthy runs: %+v", i+1, st)
		}
	}
	if st.Restarts != kills {
		t.Errorf("restarts %d, want %d", st.Restarts, kills)
	}
	kvPing(t, "tcp", addr)
}

// TestCrashLoopFailsThenRetries: a service that dies right after its
// init crash-loops into `failed`; with failed_retry it is tried again,
// and once its fault is gone it comes back and stays.
func TestCrashLoopFailsThenRetries(t *testing.T) {
	fault := filepath.Join(t.TempDir(), "fault")
	r := startRS(t, `
[service.flaky]
binary = "$BIN/roles"
args = ["-role", "crash-if", "`+fault+`"]
period = "100ms"
backoff_base = "1ms"
backoff_cap = "1ms"
max_restarts = 3
failed_retry = "300ms"
`)
	st := r.waitState("flaky", control.StateRunning, 0)
	if err := os.WriteFile(fault, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(st.Pid, syscall.SIGKILL)
	r.waitFor("flaky failed by its crash loop", func() bool {
		return strings.Contains(r.log.String(), "msg=\"failed: too many restarts\" label=flaky")
	})
	tries := func() int { return strings.Count(r.log.String(), "msg=\"trying a failed service again\" label=flaky") }
	fails := func() int { return strings.Count(r.log.String(), "msg=\"failed: too many restarts\" label=flaky") }
	// Tried again, and failed again at once: the try crash-looped too.
	r.waitFor("a failed try", func() bool { return tries() >= 1 && fails() >= 2 })
	if err := os.Remove(fault); err != nil {
		t.Fatal(err)
	}
	// Up for longer than failed_retry: back for good.
	st = r.waitFor2("flaky", func(now control.Status) bool {
		return now.State == control.StateRunning && now.UptimeS >= 0.5
	})
	if n := tries(); n < 2 {
		t.Errorf("%d tries after failed, want at least 2 (one failed, one came back)", n)
	}
}
