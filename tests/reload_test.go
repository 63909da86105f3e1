package tests

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// service reload (and SIGHUP) rereads the config file; service remove
// forgets a service.

// writeConfig replaces rs's config file, as startRS wrote it.
func (r *rsProc) writeConfig(config string) {
	r.t.Helper()
	config = strings.ReplaceAll(config, "$BIN", binDir)
	config = strings.ReplaceAll(config, "$DIR", r.dir)
	if err := os.WriteFile(filepath.Join(r.dir, "system.toml"), []byte(config), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// known tells whether status lists label.
func (r *rsProc) known(label string) bool {
	r.t.Helper()
	rep, err := r.client().Do(control.Request{Op: control.OpStatus}, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, s := range rep.Services {
		if s.Label == label {
			return true
		}
	}
	return false
}

// wantLine fails unless out has a line that starts with prefix and
// holds every one of parts.
func wantLine(t *testing.T, out, prefix string, parts ...string) {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		for _, p := range parts {
			if !strings.Contains(l, p) {
				t.Errorf("line %q: want %q in it", l, p)
			}
		}
		return
	}
	t.Errorf("no line starting %q in:\n%s", prefix, out)
}

func gone(r *rsProc, pid int, what string) {
	r.t.Helper()
	r.waitFor(what, func() bool { return !alive(pid) })
}

// TestReload: one reload adds a service (after its dependency), removes
// one, applies policy changes at once (same pid, new value in status
// --json), restarts one whose launch settings changed, keeps a service
// the operator took down down, leaves a service added with service up
// alone and does not touch an unchanged one.
func TestReload(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, `
[service.kv]
binary = "$BIN/kv"
args = ["--listen", "`+addr+`"]

[service.same]
binary = "$BIN/idle"

[service.old]
binary = "$BIN/idle"

[service.bin]
binary = "$BIN/idle"
args = ["a"]

[service.parked]
binary = "$BIN/idle"
`)
	pids := map[string]int{}
	for _, l := range []string{"kv", "same", "old", "bin", "parked"} {
		pids[l] = r.waitState(l, control.StateRunning, 0).Pid
	}
	r.mustService("down", "parked")
	r.mustService("up", "--binary", bin("idle"), "ops")
	pids["ops"] = r.status("ops").Pid

	r.writeConfig(`
[service.web]
binary = "$BIN/idle"
depends = ["same"]

[service.kv]
binary = "$BIN/kv"
args = ["--listen", "` + addr + `"]
period = "2s"
max_restarts = 3

[service.same]
binary = "$BIN/idle"

[service.bin]
binary = "$BIN/idle"
args = ["b"]

[service.parked]
binary = "$BIN/idle"
args = ["new"]
backoff_cap = "5s"
`)
	events := r.watchEvents("--json")
	out := r.mustService("reload")
	t.Logf("reload:\n%s", out)
	// The reload's changes are events too.
	allEvents(t, events, "old reload-removed", "old removed", "web reload-added", "kv reload-applied", "same reload-unchanged")
	if n := strings.Count(strings.TrimSpace(out), "\n") + 1; n != 7 {
		t.Errorf("%d lines, want one per service (7)", n)
	}
	wantLine(t, out, "kv: ", "period 1s -> 2s", "max_restarts 10 -> 3", "applied")
	wantLine(t, out, "same: unchanged")
	wantLine(t, out, "bin: args changed, restarted (pid ")
	wantLine(t, out, "parked: ", "backoff_cap 10s -> 5s applied", "args changed", "it is down")
	wantLine(t, out, "web: added, started (pid ")
	wantLine(t, out, "old: removed", fmt.Sprintf("stopped (was pid %d)", pids["old"]))
	wantLine(t, out, "ops: ", "left alone")

	// Policy: the same process, the new value.
	if st := r.status("kv"); st.Pid != pids["kv"] || st.State != control.StateRunning {
		t.Errorf("kv after a policy change: %+v, want pid %d running", st, pids["kv"])
	}
	for _, s := range r.statusJSON() {
		if s["label"] == "kv" && s["period_ms"] != 2000.0 {
			t.Errorf("kv period_ms %v in status --json, want 2000", s["period_ms"])
		}
	}
	kvPing(t, "tcp", addr)
	for _, l := range []string{"same", "ops"} {
		if st := r.status(l); st.Pid != pids[l] {
			t.Errorf("%s: pid %d -> %d across a reload that did not change it", l, pids[l], st.Pid)
		}
	}
	// Launch: a new process with the new args.
	st := r.waitState("bin", control.StateRunning, pids["bin"])
	if len(st.Args) != 1 || st.Args[0] != "b" {
		t.Errorf("bin args %q, want [b]", st.Args)
	}
	gone(r, pids["bin"], "bin's old process to end")
	if st := r.status("parked"); st.State != control.StateDown || len(st.Args) != 1 || st.Args[0] != "new" {
		t.Errorf("parked: %+v, want down with args [new]", st)
	}
	r.waitState("web", control.StateRunning, 0)
	if r.known("old") {
		t.Errorf("old still listed after its removal")
	}
	gone(r, pids["old"], "old's process to end")

	// Again: nothing changed, nothing moves.
	before := map[string]int{}
	for _, l := range []string{"kv", "same", "bin", "web", "ops"} {
		before[l] = r.status(l).Pid
	}
	out = r.mustService("reload")
	for _, l := range []string{"kv", "same", "bin", "web", "parked"} {
		wantLine(t, out, l+": unchanged")
	}
	for l, pid := range before {
		if now := r.status(l).Pid; now != pid {
			t.Errorf("%s: pid %d -> %d across an empty reload", l, pid, now)
		}
	}
}

// TestReloadUpdate: with reload_action = "update" a sef service whose
// launch settings changed is live-updated: a new process, the state
// kept (kv's keys survive).
func TestReloadUpdate(t *testing.T) {
	addr := freeAddr(t)
	cfg := func(binary string) string {
		return fmt.Sprintf(`
[service.kv]
binary = "$BIN/%s"
args = ["--listen", %q]
reload_action = "update"
`, binary, addr)
	}
	r := startRS(t, cfg("kv-a"))
	old := r.waitState("kv", control.StateRunning, 0).Pid
	c := dialKV(t, addr)
	mustDo(t, c, "OK", "SET", "kept", "across the reload")
	r.writeConfig(cfg("kv-b"))
	out := r.mustService("reload")
	wantLine(t, out, "kv: binary changed, updated live (pid "+fmt.Sprint(old)+" -> ")
	st := r.status("kv")
	if st.Pid == old || st.State != control.StateRunning || st.Binary != bin("kv-b") {
		t.Fatalf("kv after the reload: %+v, want running kv-b with a new pid", st)
	}
	// The same connection: moved with the state to the new instance.
	mustDo(t, c, "across the reload", "GET", "kept")
	if v := kvInfo(t, c, "version"); v != "b" {
		t.Errorf("version %q after the update, want b", v)
	}
	if p := kvPid(t, addr); p != st.Pid {
		t.Errorf("kv answers from pid %d, status says %d", p, st.Pid)
	}
}

// TestReloadInvalid: a file that does not parse, a missing binary, or a
// table that would break a service added with service up change
// nothing, and the error names the file and line.
func TestReloadInvalid(t *testing.T) {
	r := startRS(t, `
[service.a]
binary = "$BIN/idle"

[service.b]
binary = "$BIN/idle"
`)
	a := r.waitState("a", control.StateRunning, 0).Pid
	b := r.waitState("b", control.StateRunning, 0).Pid
	r.mustService("up", "--binary", bin("idle"), "--depends", "b", "mine")
	cfgPath := filepath.Join(r.dir, "system.toml")
	for _, c := range []struct{ name, config, want string }{
		{"unknown key", "[service.a]\nbinary = \"$BIN/idle\"\n\n[service.c]\nbinary = \"$BIN/idle\"\nperiod = \"1s\"\nrestrat = \"never\"\n",
			cfgPath + ":7: service \"c\": unknown key \"restrat\" (did you mean \"restart\"?)"},
		{"syntax", "[service.a]\nbinary = \"$BIN/idle\"\nargs = [\n", cfgPath + ":"},
		{"missing binary", "[service.a]\nbinary = \"$BIN/idle\"\n\n[service.b]\nbinary = \"$BIN/idle\"\n\n[service.c]\nbinary = \"$DIR/nothing\"\n",
			cfgPath + ":7: service \"c\": binary "},
		{"removes a dependency of service up's", "[service.a]\nbinary = \"$BIN/idle\"\n",
			`service "mine": depends on unknown service "b"`},
	} {
		r.writeConfig(c.config)
		_, errs, code := r.service("reload")
		if code == 0 || !strings.Contains(errs, c.want) || !strings.Contains(errs, "nothing changed") {
			t.Errorf("%s: exit %d, stderr %q: want an error with %q and \"nothing changed\"", c.name, code, errs, c.want)
		}
		if r.known("c") {
			t.Errorf("%s: c was added", c.name)
		}
		if pa, pb := r.status("a").Pid, r.status("b").Pid; pa != a || pb != b {
			t.Errorf("%s: pids %d, %d, want %d, %d (nothing changed)", c.name, pa, pb, a, b)
		}
	}
}

// TestReloadSIGHUP: SIGHUP to rs does what service reload does.
func TestReloadSIGHUP(t *testing.T) {
	r := startRS(t, `
[service.a]
binary = "$BIN/idle"
`)
	a := r.waitState("a", control.StateRunning, 0).Pid
	r.writeConfig(`
[service.a]
binary = "$BIN/idle"
period = "300ms"

[service.b]
binary = "$BIN/idle"
depends = ["a"]
`)
	if err := r.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// The reload reads the file in a goroutine of its own: b is in the
	// table once the loop has the reload.
	r.waitFor("b in the table", func() bool { return r.known("b") })
	r.waitState("b", control.StateRunning, 0)
	st := r.waitFor2("a", func(s control.Status) bool { return s.PeriodMs == 300 })
	if st.Pid != a {
		t.Errorf("a: pid %d -> %d by a period change", a, st.Pid)
	}
	r.waitFor("the reload's lines in rs's log", func() bool {
		l := r.log.String()
		return strings.Contains(l, `msg=reloaded label=b result="b: added, started (pid `) &&
			strings.Contains(l, `msg=reloaded label=a result="a: period 1s -> 300ms, ping_timeout 1s -> 300ms applied"`)
	})
	// An invalid file by SIGHUP: logged, nothing changed.
	r.writeConfig("[service.a]\nbinary = 1\n")
	r.cmd.Process.Signal(syscall.SIGHUP)
	r.waitFor("the refused reload in rs's log", func() bool {
		return strings.Contains(r.log.String(), "SIGHUP: reload failed")
	})
	if !r.known("b") || r.status("a").Pid != a {
		t.Errorf("an invalid file changed the table")
	}
}

// TestRemove: remove a running service (its process, its listener and
// every fd rs held for it go), a down one, and a configured one, which
// the next reload brings back; a service others depend on is refused.
func TestRemove(t *testing.T) {
	r := startRS(t, `
[service.conf]
binary = "$BIN/idle"
`)
	r.waitState("conf", control.StateRunning, 0)
	rsPid := r.cmd.Process.Pid
	fds := fdCount(t, rsPid)

	addr := freeAddr(t)
	r.mustService("up", "--binary", bin("idle"), "--listen", "tcp:"+addr, "lis")
	pid := r.status("lis").Pid
	if c, err := net.Dial("tcp", addr); err != nil {
		t.Fatalf("lis's listener: %v", err)
	} else {
		c.Close()
	}
	out := r.mustService("remove", "lis")
	if want := fmt.Sprintf("lis removed (pid %d stopped)", pid); !strings.Contains(out, want) {
		t.Errorf("remove: %q, want %q", out, want)
	}
	if r.known("lis") {
		t.Errorf("lis still listed")
	}
	gone(r, pid, "lis's process to end")
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts after its service was removed", addr)
	}
	fdsBackTo(t, rsPid, fds, "after a service with a listener was removed")

	r.mustService("up", "--binary", bin("idle"), "d")
	r.mustService("down", "d")
	if out := r.mustService("remove", "d"); !strings.Contains(out, "d removed (it was down)") {
		t.Errorf("remove of a down service: %q", out)
	}
	if _, errs, code := r.service("up", "d"); code == 0 || !strings.Contains(errs, "give --binary") {
		t.Errorf("up of a removed label without --binary: exit %d, %q (want it unknown)", code, errs)
	}

	r.mustService("up", "--binary", bin("idle"), "--depends", "conf", "dep")
	if _, errs, code := r.service("remove", "conf"); code == 0 || !strings.Contains(errs, "dep depend on it") {
		t.Errorf("remove of a dependency: exit %d, %q; want it refused naming dep", code, errs)
	}
	r.mustService("remove", "dep")
	old := r.status("conf").Pid
	out = r.mustService("remove", "conf")
	if !strings.Contains(out, "comes back at the next reload") {
		t.Errorf("remove of a configured service: %q, want it to say it comes back", out)
	}
	if r.known("conf") {
		t.Errorf("conf still listed")
	}
	out = r.mustService("reload")
	wantLine(t, out, "conf: added, started (pid ")
	r.waitState("conf", control.StateRunning, old)
	if _, errs, code := r.service("remove", "nosuch"); code == 0 || !strings.Contains(errs, "nosuch") {
		t.Errorf("remove of an unknown label: exit %d, %q", code, errs)
	}
}
