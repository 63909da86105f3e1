package tests

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// update-self: rs execs a new binary of itself in place with its table.

// selfConfig runs a service of every type: kv (sef, with faults allowed
// for the heartbeat check; timeouts long enough for a loaded machine),
// sdnotify (notify, serving on a listener rs
// holds), plain (simple, probed) and the counter role (sef, a log line
// every millisecond).
func selfConfig(t *testing.T) (cfg, kvAddr, noteAddr, plainAddr string) {
	kvAddr, noteAddr, plainAddr = freeAddr(t), freeAddr(t), freeAddr(t)
	cfg = fmt.Sprintf(`
[service.kv]
binary = "$BIN/kv"
args = ["--listen", %q, "--allow-faults"]
period = "100ms"
ping_timeout = "1s"

[service.note]
type = "notify"
binary = "$BIN/sdnotify"
args = ["-serve"]
listen = ["tcp:%s"]
period = "200ms"
ping_timeout = "2s"

[service.plain]
type = "simple"
binary = "$BIN/plain"
args = ["-listen", %q]
ready = "tcp:%s"
probe = "tcp:%s"
period = "100ms"
probe_timeout = "2s"

[service.counter]
binary = "$BIN/roles"
args = ["-role", "counter"]
period = "100ms"
ping_timeout = "2s"
`, kvAddr, noteAddr, plainAddr, plainAddr, plainAddr)
	return
}

var selfLabels = []string{"kv", "note", "plain", "counter"}

func rsPids(t *testing.T, r *rsProc) map[string]int {
	t.Helper()
	pids := map[string]int{}
	for _, l := range selfLabels {
		st := r.waitState(l, control.StateRunning, 0)
		pids[l] = st.Pid
	}
	return pids
}

// noteServes asks the notify fixture which pid serves.
func noteServes(t *testing.T, addr string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		t.Fatalf("note: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := c.Write([]byte("hi\n")); err != nil {
		t.Fatalf("note: %v", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("note: %v", err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "pid ")))
	return n
}

// lastCount is the last "n <i>" of the counter's log file.
func lastCount(t *testing.T, r *rsProc) int {
	t.Helper()
	b, _ := os.ReadFile(filepath.Join(r.logDir, "counter.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		f := strings.Fields(lines[i])
		if len(f) == 4 && f[2] == "n" {
			if n, err := strconv.Atoi(f[3]); err == nil {
				return n
			}
		}
	}
	return -1
}

// TestUpdateSelf: 20 update-selfs with a service of every type running.
// rs's pid and every service's pid stay the same (none got SIGKILL by
// PDEATHSIG: the exec runs on the thread that forked them), kv keeps
// its keys and answers, the notify service answers on its held
// listener, the counter's lines still reach its log file, and pings go
// on (a hung kv is found by the new rs's heartbeat).
func TestUpdateSelf(t *testing.T) {
	cfg, kvAddr, noteAddr, _ := selfConfig(t)
	r := startRS(t, cfg, "--metrics", "127.0.0.1:0")
	var metricsAddr string
	r.waitFor("metrics listening", func() bool {
		m := regexp.MustCompile(`msg="metrics listening" addr=(\S+)`).FindStringSubmatch(r.log.String())
		if m != nil {
			metricsAddr = m[1]
		}
		return m != nil
	})
	before := rsPids(t, r)
	kvDo(t, kvAddr, "SET", "k", "v")
	kv := dialKV(t, kvAddr) // a connection open across every exec
	if _, err := kv.Do("INCR", "n"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		out := r.mustService("update-self")
		if !strings.Contains(out, "rs updated: pid "+strconv.Itoa(r.cmd.Process.Pid)+", 4 services adopted") {
			t.Fatalf("update-self %d: %q", i, out)
		}
		if v, err := kv.Do("INCR", "n"); err != nil || v.Int != int64(i+2) {
			t.Fatalf("update-self %d: INCR on the open connection: %v %v", i, v, err)
		}
	}
	after := rsPids(t, r)
	for l, p := range before {
		if after[l] != p {
			t.Errorf("%s: pid %d before, %d after", l, p, after[l])
		}
		if st := r.status(l); st.Restarts != 0 || st.LastExit != "" {
			t.Errorf("%s: restarts %d, last exit %q", l, st.Restarts, st.LastExit)
		}
	}
	if v := kvDo(t, kvAddr, "GET", "k"); v.Str != "v" {
		t.Errorf("kv lost its key: %v", v)
	}
	if p := kvPid(t, kvAddr); p != before["kv"] {
		t.Errorf("kv answers from pid %d, not %d", p, before["kv"])
	}
	if p := noteServes(t, noteAddr); p != before["note"] {
		t.Errorf("note answers from pid %d, not %d", p, before["note"])
	}
	// The metrics listener crossed every exec: the same address answers.
	if resp, err := http.Get("http://" + metricsAddr + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz after the updates: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// A line written after the last update reaches the log file.
	n := lastCount(t, r)
	r.waitFor("counter lines after the update", func() bool { return lastCount(t, r) > n+50 })
	// The new rs pings: kv hangs and is reincarnated for no-heartbeat.
	kvDo(t, kvAddr, "DEBUG", "FAULT", "hang")
	st := r.waitState("kv", control.StateRunning, before["kv"])
	if !strings.HasPrefix(st.LastExit, "no-heartbeat") {
		t.Errorf("kv's last exit: %q, want no-heartbeat", st.LastExit)
	}
	// The new rs forked that kv: an update-self keeps it too.
	r.mustService("update-self")
	if p := r.waitState("kv", control.StateRunning, 0).Pid; p != st.Pid {
		t.Errorf("kv started by the new rs: pid %d, then %d", st.Pid, p)
	}
	if p := kvPid(t, kvAddr); p != st.Pid {
		t.Errorf("kv answers from pid %d, not %d", p, st.Pid)
	}
}

// TestUpdateSelfBadBinary: a new binary that exits at once fails its
// --check-table; nothing changed and the command says why.
func TestUpdateSelfBadBinary(t *testing.T) {
	cfg, kvAddr, _, _ := selfConfig(t)
	r := startRS(t, cfg)
	before := rsPids(t, r)
	kvDo(t, kvAddr, "SET", "k", "v")
	_, errs, code := r.service("update-self", "--binary", "/bin/false")
	if code == 0 || !strings.Contains(errs, "rolled back") || !strings.Contains(errs, "--check-table") {
		t.Fatalf("update-self --binary /bin/false: exit %d, %q", code, errs)
	}
	for l, p := range rsPids(t, r) {
		if before[l] != p {
			t.Errorf("%s: pid %d before, %d after", l, before[l], p)
		}
	}
	if v := kvDo(t, kvAddr, "GET", "k"); v.Str != "v" {
		t.Errorf("kv lost its key: %v", v)
	}
	// Something that cannot be carried is refused, and nothing changes:
	// a standby.
	r.mustService("clone", "kv")
	r.waitFor2("kv", func(st control.Status) bool { return st.StandbyPid != 0 })
	if _, errs, code := r.service("update-self"); code == 0 || !strings.Contains(errs, "kv: has a standby") {
		t.Errorf("update-self with a standby: exit %d, %q", code, errs)
	}
	r.mustService("unclone", "kv")
	r.waitFor2("kv", func(st control.Status) bool { return st.StandbyPid == 0 })
	// And it still updates itself.
	r.waitFor("update-self", func() bool {
		_, _, code := r.service("update-self") // the standby's end may still be under way
		return code == 0
	})
	for l, p := range rsPids(t, r) {
		if before[l] != p {
			t.Errorf("%s: pid %d before, %d after", l, before[l], p)
		}
	}
}

// TestUpdateSelfRollback: the new rs refuses the table (an rsfault hook)
// and execs the old binary with it: every service as it was, and the
// command fails saying why.
func TestUpdateSelfRollback(t *testing.T) {
	t.Setenv("RS_FAULT_ADOPT", "1")
	cfg, kvAddr, _, _ := selfConfig(t)
	r := startRSBin(t, bin("rs-fault"), cfg, nil)
	before := rsPids(t, r)
	kvDo(t, kvAddr, "SET", "k", "v")
	_, errs, code := r.service("update-self")
	if code == 0 || !strings.Contains(errs, "rolled back") || !strings.Contains(errs, "RS_FAULT_ADOPT") {
		t.Fatalf("update-self: exit %d, %q", code, errs)
	}
	for l, p := range rsPids(t, r) {
		if before[l] != p {
			t.Errorf("%s: pid %d before, %d after", l, before[l], p)
		}
	}
	if v := kvDo(t, kvAddr, "GET", "k"); v.Str != "v" {
		t.Errorf("kv lost its key: %v", v)
	}
}

// TestPanicReexec: a panic in rs's loop (an rsfault hook, SIGUSR2) is
// logged with its stack, and rs re-execs itself with its table instead
// of dying: same pids, kv's keys there.
func TestPanicReexec(t *testing.T) {
	cfg, kvAddr, _, _ := selfConfig(t)
	r := startRSBin(t, bin("rs-fault"), cfg, nil)
	before := rsPids(t, r)
	kvDo(t, kvAddr, "SET", "k", "v")
	r.cmd.Process.Signal(syscall.SIGUSR2)
	r.waitFor("the re-exec after the panic", func() bool {
		return strings.Contains(r.log.String(), "why=\"panic: rsfault")
	})
	log := r.log.String()
	if !strings.Contains(log, "a panic in the loop") || !strings.Contains(log, "goroutine ") {
		t.Errorf("the panic is not logged with its stack")
	}
	for l, p := range rsPids(t, r) {
		if before[l] != p {
			t.Errorf("%s: pid %d before, %d after", l, before[l], p)
		}
	}
	if v := kvDo(t, kvAddr, "GET", "k"); v.Str != "v" {
		t.Errorf("kv lost its key: %v", v)
	}
	r.mustService("update-self")
}
