package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reincarnation/rs/internal/resp"
	"github.com/reincarnation/rs/rs/control"
)

// groupKV is three kv instances for group updates: kv1 depends on kv2,
// kv2 on kv3, so the prepare order is kv1 kv2 kv3 whatever the
// command's. Each member runs its own copy of kv-a (in a directory of
// its own), which a test may replace to make that member's next
// instance fail.
type groupKV struct {
	r     *rsProc
	addrs map[string]string
	conns map[string]*resp.Client
	pids  map[string]int
	bins  map[string]string // each member's binary
}

var groupLabels = []string{"kv1", "kv2", "kv3"}

func startGroupKV(t *testing.T, extra string) *groupKV {
	t.Helper()
	g := &groupKV{addrs: map[string]string{}, conns: map[string]*resp.Client{}, pids: map[string]int{},
		bins: map[string]string{}}
	dir := t.TempDir()
	deps := map[string]string{"kv1": `["kv2"]`, "kv2": `["kv3"]`, "kv3": `[]`}
	var cfg strings.Builder
	for _, l := range groupLabels {
		g.addrs[l] = freeAddr(t)
		g.bins[l] = filepath.Join(dir, l)
		copyFile(bin("kv-a"), g.bins[l])
		fmt.Fprintf(&cfg, "[service.%s]\nbinary = %q\nargs = [\"--listen\", %q]\nperiod = \"200ms\"\ninit_timeout = \"2s\"\ndepends = %s\n\n",
			l, g.bins[l], g.addrs[l], deps[l])
	}
	cfg.WriteString(extra)
	g.r = startRS(t, cfg.String())
	for _, l := range groupLabels {
		g.pids[l] = g.r.waitState(l, control.StateRunning, 0).Pid
		g.conns[l] = dialKV(t, g.addrs[l])
		loadKeys(t, g.conns[l], 100)
	}
	return g
}

// replaceBinary makes label's next instance run build.
func (g *groupKV) replaceBinary(t *testing.T, label, build string) {
	t.Helper()
	tmp := g.bins[label] + ".new"
	copyFile(bin(build), tmp)
	if err := os.Rename(tmp, g.bins[label]); err != nil {
		t.Fatal(err)
	}
}

// check: every member runs, each on the same connection as before with
// its 100 keys, served by the pid the status shows; changed says whether
// that pid must differ from the one before (a commit) or be it (a
// rollback).
func (g *groupKV) check(t *testing.T, changed bool) {
	t.Helper()
	for _, l := range groupLabels {
		st := g.r.status(l)
		if st.State != control.StateRunning || (st.Pid != g.pids[l]) != changed {
			t.Fatalf("%s: %s pid %d (before: pid %d), want running and the pid changed=%v", l, st.State, st.Pid, g.pids[l], changed)
		}
		if pid := kvInfo(t, g.conns[l], "process_id"); pid != strconv.Itoa(st.Pid) {
			t.Fatalf("%s served by pid %s, want %d", l, pid, st.Pid)
		}
		checkKeys(t, g.conns[l], 100)
	}
}

// memberEvents reads `service events --json` lines until each member
// had event ev, and returns them by label.
func memberEvents(t *testing.T, lines <-chan string, ev string) map[string]control.Event {
	t.Helper()
	got := map[string]control.Event{}
	timeout := time.After(waitTimeout)
	for len(got) < len(groupLabels) {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("service events ended before every %s (got %v)", ev, got)
			}
			var e control.Event
			if err := json.Unmarshal([]byte(l), &e); err != nil {
				t.Fatalf("service events --json: %v: %q", err, l)
			}
			if e.Event == ev {
				if _, dup := got[e.Label]; dup {
					t.Fatalf("two %s of %s", ev, e.Label)
				}
				got[e.Label] = e
			}
		case <-timeout:
			t.Fatalf("not every member had %s: %v", ev, got)
		}
	}
	return got
}

// inOrder fails unless each of lines appears in text after the one
// before it.
func inOrder(t *testing.T, text string, lines ...string) {
	t.Helper()
	at := 0
	for _, l := range lines {
		i := strings.Index(text[at:], l)
		if i < 0 {
			t.Fatalf("%q not found after %q (in order %q) in:\n%s", l, text[:at], lines, text)
		}
		at += i + len(l)
	}
}

// TestGroupUpdateCommits: three kv instances updated as one: every pid
// changes, every key and connection carries over; dependents are
// prepared first and resumed last, whatever the command's order.
func TestGroupUpdateCommits(t *testing.T) {
	g := startGroupKV(t, "")
	js := g.r.watchEvents("--json")
	out, errOut, code := g.r.service("update", "--binary", bin("kv-b"), "kv3", "kv1", "kv2")
	if code != 0 || !strings.Contains(out, "kv3 kv1 kv2 updated as one") {
		t.Fatalf("group update: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	inOrder(t, errOut, "prepare [kv1] then [kv2] then [kv3]", "kv1: preparing", "kv2: preparing", "kv3: preparing",
		"kv3: handing over", "kv2: handing over", "kv1: handing over", "kv3: committed", "kv2: committed", "kv1: committed")
	g.check(t, true)
	for l, e := range memberEvents(t, js, "update-committed") {
		if e.Pid != g.r.status(l).Pid {
			t.Errorf("%s's update-committed: %+v", l, e)
		}
	}
	// Every old instance is ended.
	g.r.waitFor("the old instances to end", func() bool {
		return !alive(g.pids["kv1"]) && !alive(g.pids["kv2"]) && !alive(g.pids["kv3"])
	})
	for _, l := range groupLabels {
		if v := kvInfo(t, g.conns[l], "version"); v != "b" {
			t.Errorf("%s runs version %q, want b", l, v)
		}
		if !strings.Contains(g.r.log.String(), `update committed" label=`+l+" ") {
			t.Errorf("no commit logged for %s", l)
		}
	}
}

// TestGroupUpdateRollsBackAll: one member's new instance fails (kv2's
// binary now exits during its live-update init, or every member's
// refuses the state); every member rolls back, each old instance serves
// on with its state and its connections.
func TestGroupUpdateRollsBackAll(t *testing.T) {
	g := startGroupKV(t, "")
	// Only kv2's next instance runs the failing build.
	g.replaceBinary(t, "kv2", "kv-luexit")
	js := g.r.watchEvents("--json")
	_, errOut, code := g.r.service("update", "kv1", "kv2", "kv3")
	if code == 0 || !strings.Contains(errOut, "update kv1 kv2 kv3 rolled back: kv2: new instance terminated: exit 1; every member's old instance serves on") {
		t.Fatalf("group update: exit %d, stderr %q", code, errOut)
	}
	// Each member's rollback is an event of its own (and a count in
	// rs_service_updates_total), about its old instance.
	for l, e := range memberEvents(t, js, "update-rolled-back") {
		want := "group update: kv2 failed: new instance terminated: exit 1"
		if l == "kv2" {
			want = "new instance terminated: exit 1"
		}
		if e.Pid != g.pids[l] || e.Reason != want {
			t.Errorf("%s's update-rolled-back: %+v, want pid %d, reason %q", l, e, g.pids[l], want)
		}
	}
	for _, l := range []string{"kv3", "kv1"} {
		if !strings.Contains(errOut, l+": rolled back: group update: kv2 failed") {
			t.Errorf("no rollback line for %s in %q", l, errOut)
		}
	}
	g.check(t, false)

	_, errOut, code = g.r.service("update", "--binary", bin("kv-lurestore"), "kv1", "kv2", "kv3")
	if code == 0 || !strings.Contains(errOut, "new instance init failed: restore: refusing the state") {
		t.Fatalf("group update to kv-lurestore: exit %d, stderr %q", code, errOut)
	}
	g.check(t, false)
}

// TestGroupUpdatePrepareTimeout: kv2 holds a long request, so it cannot
// be request-free within maxtime; kv1, prepared before it, is quiescent
// meanwhile. Both resume: the group rolls back, the request completes.
func TestGroupUpdatePrepareTimeout(t *testing.T) {
	g := startGroupKV(t, "")
	sleeper := dialKV(t, g.addrs["kv2"])
	slept := make(chan error, 1)
	go func() {
		v, err := sleeper.Do("DEBUG", "SLEEP", "1.5")
		if err == nil && v.Str != "OK" {
			err = fmt.Errorf("DEBUG SLEEP: %v", v)
		}
		slept <- err
	}()
	g.r.waitFor("the sleep to be in flight", func() bool { return kvInfo(t, g.conns["kv2"], "blocked_clients") == "1" })
	_, errOut, code := g.r.service("update", "--state", "2", "--maxtime", "300ms", "kv3", "kv2", "kv1")
	if code == 0 || !strings.Contains(errOut, "rolled back: kv2: prepare timed out after 300ms") {
		t.Fatalf("group update: exit %d, stderr %q", code, errOut)
	}
	inOrder(t, errOut, "kv1: ready", "kv2: preparing", "kv2: rolled back")
	if strings.Contains(errOut, "kv3: preparing") {
		t.Errorf("kv3 was asked to prepare after kv2 timed out: %q", errOut)
	}
	if err := <-slept; err != nil {
		t.Fatalf("the long request failed after the rollback: %v", err)
	}
	g.check(t, false)
}

// TestGroupUpdateRefused: what cannot be a group is refused before
// anything starts: a duplicate, an unknown label, a member of a type
// without live update, a member already updating.
func TestGroupUpdateRefused(t *testing.T) {
	g := startGroupKV(t, `[service.pl]
binary = "$BIN/plain"
type = "simple"
args = ["-listen", "unix:$DIR/pl.sock"]
`)
	g.r.waitState("pl", control.StateRunning, 0)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"kv1", "kv2", "kv1"}, "update kv1 kv2 kv1: kv1 named twice"},
		{[]string{"kv1", "nosuch"}, `update kv1 nosuch: unknown service "nosuch" (nothing changed)`},
		{[]string{"kv1", "pl"}, "pl is type simple, which has no live update (it is replaced, not updated): it cannot join a group update; update it alone"},
		{[]string{"kv1", "--state", "2"}, "flags go before the labels"},
	} {
		_, errOut, code := g.r.service(append([]string{"update"}, c.args...)...)
		if code == 0 || !strings.Contains(errOut, c.want) {
			t.Errorf("update %v: exit %d, %q, want %q", c.args, code, errOut, c.want)
		}
	}
	// A member in an update of its own: busy.
	sleeper := dialKV(t, g.addrs["kv3"])
	slept := make(chan error, 1)
	go func() { _, err := sleeper.Do("DEBUG", "SLEEP", "1"); slept <- err }()
	g.r.waitFor("the sleep to be in flight", func() bool { return kvInfo(t, g.conns["kv3"], "blocked_clients") == "1" })
	first := make(chan string, 1)
	go func() {
		_, errOut, code := runService(t, g.r.sock, nil, "update", "--quiet", "--state", "2", "--maxtime", "20s", "kv3")
		first <- fmt.Sprintf("%d %s", code, errOut)
	}()
	g.r.waitFor("kv3's update to start", func() bool { return g.r.status("kv3").State == control.StateUpdating })
	_, err := g.r.client().Do(control.Request{Op: control.OpUpdate, Label: "kv1", Group: []string{"kv3"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "kv3: an update is already in progress") {
		t.Errorf("group with a member updating: %v", err)
	}
	if got := <-first; got != "0 " {
		t.Fatalf("kv3's own update: %q", got)
	}
	if err := <-slept; err != nil {
		t.Fatalf("long request: %v", err)
	}
	for _, l := range []string{"kv1", "kv2"} {
		if st := g.r.status(l); st.Pid != g.pids[l] || st.State != control.StateRunning {
			t.Errorf("%s after refused groups: %+v", l, st)
		}
	}
}

// TestGroupUpdateShutdown: rs is asked to stop while kv1 is prepared and
// kv2 still preparing: the group rolls back, the command says why, and
// rs stops every service and exits.
func TestGroupUpdateShutdown(t *testing.T) {
	g := startGroupKV(t, "")
	sleeper := dialKV(t, g.addrs["kv2"])
	go sleeper.Do("DEBUG", "SLEEP", "2")
	g.r.waitFor("the sleep to be in flight", func() bool { return kvInfo(t, g.conns["kv2"], "blocked_clients") == "1" })
	res := make(chan string, 1)
	go func() {
		_, errOut, code := runService(t, g.r.sock, nil, "update", "--state", "2", "--maxtime", "20s", "kv1", "kv2", "kv3")
		res <- fmt.Sprintf("%d %s", code, errOut)
	}()
	g.r.waitFor("kv1 to be prepared", func() bool {
		b, _ := os.ReadFile(filepath.Join(g.r.logDir, "kv1.log"))
		return strings.Contains(string(b), "ready for live update")
	})
	g.r.mustService("shutdown")
	got := <-res
	if !strings.HasPrefix(got, "1 ") || !strings.Contains(got, "rolled back: kv") || !strings.Contains(got, "rs is shutting down") {
		t.Fatalf("the group update during a shutdown: %q", got)
	}
	g.r.waitFor("rs to exit", func() bool {
		select {
		case <-g.r.done:
			return true
		default:
			return false
		}
	})
}

// TestGroupUpdateOldCrashes: kv1's old instance dies while it is
// prepared and kv2 still preparing: the group rolls back, kv1 is
// reincarnated as after any crash, kv2 and kv3 serve on untouched.
func TestGroupUpdateOldCrashes(t *testing.T) {
	g := startGroupKV(t, "")
	sleeper := dialKV(t, g.addrs["kv2"])
	slept := make(chan error, 1)
	go func() { _, err := sleeper.Do("DEBUG", "SLEEP", "1"); slept <- err }()
	g.r.waitFor("the sleep to be in flight", func() bool { return kvInfo(t, g.conns["kv2"], "blocked_clients") == "1" })
	res := make(chan string, 1)
	go func() {
		_, errOut, code := runService(t, g.r.sock, nil, "update", "--state", "2", "--maxtime", "20s", "kv1", "kv2", "kv3")
		res <- fmt.Sprintf("%d %s", code, errOut)
	}()
	g.r.waitFor("kv1 to be prepared", func() bool {
		b, _ := os.ReadFile(filepath.Join(g.r.logDir, "kv1.log"))
		return strings.Contains(string(b), "ready for live update")
	})
	if err := syscall.Kill(g.pids["kv1"], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	got := <-res
	if !strings.HasPrefix(got, "1 ") || !strings.Contains(got, "rolled back: kv1: old instance terminated: SIGKILL") {
		t.Fatalf("the group update when kv1's old instance died: %q", got)
	}
	if err := <-slept; err != nil {
		t.Fatalf("long request: %v", err)
	}
	g.r.waitState("kv1", control.StateRunning, g.pids["kv1"])
	for _, l := range []string{"kv2", "kv3"} {
		st := g.r.status(l)
		if st.Pid != g.pids[l] || st.State != control.StateRunning {
			t.Fatalf("%s: %+v, want pid %d running", l, st, g.pids[l])
		}
		checkKeys(t, g.conns[l], 100)
	}
}
