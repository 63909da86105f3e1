package tests

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// Notify services (type = "notify"): the sdnotify fixture is written only
// against go-systemd's daemon package, as a systemd service would be.

// TestNotifyReadyStatusWatchdogCrash runs four notify services at once:
// one well-behaved (READY=1, STATUS=, WATCHDOG=1 at a third of
// WATCHDOG_USEC), one that stops its keep-alives, one that crashes, one
// that names a MAINPID outside its tree; and a datagram from a process
// outside the services.
func TestNotifyReadyStatusWatchdogCrash(t *testing.T) {
	r := startRS(t, `
[service.good]
type = "notify"
binary = "$BIN/sdnotify"
args = ["-status", "serving 0 clients", "-socket-file", "$DIR/good.sock"]
period = "100ms"

[service.quiet]
type = "notify"
binary = "$BIN/sdnotify"
args = ["-watchdog-stop", "3"]
period = "100ms"
backoff_reset = "10ms"

[service.crash]
type = "notify"
binary = "$BIN/sdnotify"
args = ["-exit-after", "200ms", "-errno", "5"]
backoff_reset = "10ms"

[service.foreign]
type = "notify"
binary = "$BIN/sdnotify"
args = ["-mainpid", "1", "-status", "after mainpid"]
`)
	good := r.waitFor2("good", func(s control.Status) bool {
		return s.State == control.StateRunning && s.StatusText == "serving 0 clients"
	})
	if good.Type != "notify" {
		t.Errorf("type %q, want notify", good.Type)
	}
	r.waitFor("good to be pinged", func() bool { return r.status("good").PingRTTUs > 0 })
	// Its watchdog is its own: WATCHDOG_PID is its pid (go-systemd's
	// SdWatchdogEnabled says no watchdog for any other).
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", good.Pid))
	if err != nil || !strings.Contains("\x00"+string(env), fmt.Sprintf("\x00WATCHDOG_PID=%d\x00", good.Pid)) {
		t.Errorf("good's environment has no WATCHDOG_PID=%d (%v): %q", good.Pid, err, env)
	}

	// Keep-alives stop: no-heartbeat, as a sef service that stops
	// answering pings.
	q := r.waitFor2("quiet", func(s control.Status) bool { return s.Restarts >= 1 })
	if !strings.HasPrefix(q.LastExit, "no-heartbeat") {
		t.Errorf("quiet: last_exit %q, want no-heartbeat", q.LastExit)
	}
	c := r.waitFor2("crash", func(s control.Status) bool { return s.Restarts >= 1 })
	if c.LastExit != "terminated: exit 3 (ERRNO=5: input/output error)" {
		t.Errorf("crash: last_exit %q, want terminated: exit 3 with its ERRNO", c.LastExit)
	}

	// MAINPID=1 is outside its tree: refused, and the service goes on.
	f := r.waitFor2("foreign", func(s control.Status) bool { return s.StatusText == "after mainpid" })
	r.waitFor("MAINPID refused in rs's log", func() bool {
		return strings.Contains(r.log.String(), "MAINPID refused") && strings.Contains(r.log.String(), "MAINPID=1: not a process of the service")
	})
	if st := r.status("foreign"); st.State != control.StateRunning || st.Pid != f.Pid || st.Restarts != 0 {
		t.Errorf("foreign after MAINPID=1: %+v", st)
	}

	// A datagram from this process, outside the service: ignored, counted.
	path, err := os.ReadFile(filepath.Join(r.dir, "good.sock"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: string(path), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"STATUS=hijacked", "STOPPING=1"} {
		if _, err := conn.Write([]byte(d)); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close()
	r.waitFor("2 rejected datagrams", func() bool { return r.status("good").NotifyRejected == 2 })
	if st := r.status("good"); st.StatusText != "serving 0 clients" || st.State != control.StateRunning || st.Restarts != 0 {
		t.Errorf("good after a stranger's datagrams: %+v", st)
	}
	for _, s := range r.statusJSON() {
		if s["label"] == "good" && (s["type"] != "notify" || s["status_text"] != "serving 0 clients" || s["notify_rejected"] != 2.0) {
			t.Errorf("status --json of good: %v", s)
		}
	}
	if out := r.mustService("status"); !strings.Contains(out, "good: type notify, status: serving 0 clients, 2 notify datagrams rejected") {
		t.Errorf("status text:\n%s", out)
	}

	// down: stopped cleanly, its socket gone.
	r.mustService("down", "good")
	if _, err := os.Stat(string(path)); !os.IsNotExist(err) {
		r.waitFor("the notify socket removed", func() bool { _, err := os.Stat(string(path)); return os.IsNotExist(err) })
	}
}

// TestNotifyUpWaitsForReady: `service up` of a notify service returns
// once it said READY=1 (running at once, status text next), and fails
// with init-timeout when it never does.
func TestNotifyUpWaitsForReady(t *testing.T) {
	r := startRS(t, "")
	out := r.mustService("up", "--type", "notify", "--binary", bin("sdnotify"), "--args", "-ready-after 300ms", "late")
	if !strings.Contains(out, "running") {
		t.Errorf("up: %q", out)
	}
	if st := r.status("late"); st.State != control.StateRunning {
		t.Errorf("after up: %s, want running", st.State)
	}
	_, errs, code := r.service("up", "--type", "notify", "--binary", bin("sdnotify"), "--args", "-never-ready", "--init-timeout", "300ms", "never")
	if code == 0 || !strings.Contains(errs, "init-timeout") {
		t.Errorf("up of a never-ready service: exit %d, %q", code, errs)
	}
	if st := r.status("never"); st.State != control.StateFailed || !strings.HasPrefix(st.LastExit, "init-timeout") {
		t.Errorf("never: %s, %q", st.State, st.LastExit)
	}
}

// TestNotifyFDStoreAndBarrier: datagrams over 4 KiB or with a NUL are
// dropped and counted; FDSTORE=1 keeps a file in the fd store
// under FDNAME=, FDSTOREREMOVE=1 drops it, a file without FDSTORE=1 is
// not kept, and BARRIER=1's fd is closed (the role waits for that before
// it says READY=1).
func TestNotifyFDStoreAndBarrier(t *testing.T) {
	r := startRS(t, "")
	r.mustService("up", "--type", "notify", "--binary", bin("roles"), "--args", "-role notify-fds", "fds")
	st := r.waitFor2("fds", func(s control.Status) bool { return s.StatusText == "stored" })
	if st.StoredFDs != 1 {
		t.Errorf("stored_fds %d, want 1 (keep)", st.StoredFDs)
	}
	if st.NotifyRejected != 2 {
		t.Errorf("notify_rejected %d, want 2 (the datagram over 4 KiB, the one with a NUL)", st.NotifyRejected)
	}
	// Its next instance gets the stored pipe back at fd 3, named.
	syscall.Kill(st.Pid, syscall.SIGKILL)
	again := r.waitFor2("fds", func(s control.Status) bool { return s.Pid != st.Pid && s.StatusText != "" && s.StatusText != "stored" })
	if again.StatusText != "got keep=1 pid=true" {
		t.Errorf("the restarted instance says %q, want the stored fd back (got keep=1 pid=true)", again.StatusText)
	}
	r.mustService("down", "fds")
	if st := r.status("fds"); st.StoredFDs != 0 {
		t.Errorf("down: stored_fds %d, want 0", st.StoredFDs)
	}
}

// TestNotifyMainPid: MAINPID= of a process in the service's tree is
// watched: its exit is the service's death, though it is not rs's child;
// the stop signal goes to it.
func TestNotifyMainPid(t *testing.T) {
	r := startRS(t, "")
	pidFile := filepath.Join(r.dir, "main.pid")
	termFile := filepath.Join(r.dir, "term")
	r.mustService("up", "--type", "notify", "--binary", bin("roles"), "--args", "-role notify-mainpid "+pidFile+" "+termFile, "mp")
	var main int
	r.waitFor("the main pid", func() bool {
		b, err := os.ReadFile(pidFile)
		main, _ = strconv.Atoi(string(b))
		return err == nil && main > 0
	})
	r.waitFor("rs to take the main pid", func() bool { return strings.Contains(r.log.String(), "main_pid="+strconv.Itoa(main)) })
	first := r.status("mp").Pid
	os.Remove(pidFile)
	if err := syscall.Kill(main, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st := r.waitState("mp", control.StateRunning, first)
	if st.Restarts != 1 || !strings.Contains(st.LastExit, "main pid "+strconv.Itoa(main)+" exited") {
		t.Errorf("after the main pid's death: restarts %d, last_exit %q", st.Restarts, st.LastExit)
	}
	if alive(first) {
		t.Errorf("the old leader %d outlived its main pid", first)
	}

	// down: the stop signal goes to the main pid. Had it gone to the
	// leader, the leader would exit at once and its group be killed
	// (SIGKILL) before the main pid heard of any SIGTERM.
	r.waitFor("the new main pid", func() bool {
		b, err := os.ReadFile(pidFile)
		n, _ := strconv.Atoi(string(b))
		return err == nil && n > 0 && n != main && strings.Contains(r.log.String(), "main_pid="+strconv.Itoa(n))
	})
	r.mustService("down", "mp")
	if b, err := os.ReadFile(termFile); err != nil || strings.TrimSpace(string(b)) != "term" {
		t.Errorf("the main pid did not get the stop signal: %q %v", b, err)
	}
}

// TestNotifyStoppingReloadingExtend: STOPPING=1 shows the service
// stopping and bounds its exit by stop_grace; RELOADING=1 ... READY=1
// shows it reloading meanwhile; EXTEND_TIMEOUT_USEC= lets a start take
// longer than init_timeout.
func TestNotifyStoppingReloadingExtend(t *testing.T) {
	r := startRS(t, `
[service.stopper]
type = "notify"
binary = "$BIN/sdnotify"
args = ["-stopping", "-hang-after-stopping"]
stop_grace = "300ms"
backoff_reset = "10ms"

[service.reloader]
type = "notify"
binary = "$BIN/sdnotify"
args = ["-reload"]

[service.slow]
type = "notify"
binary = "$BIN/sdnotify"
args = ["-extend", "20s", "-ready-after", "2s"]
init_timeout = "1s"
`)
	st := r.waitState("stopper", control.StateRunning, 0)
	syscall.Kill(st.Pid, syscall.SIGTERM)
	r.waitFor2("stopper", func(s control.Status) bool { return s.State == control.StateStopping })
	st = r.waitFor2("stopper", func(s control.Status) bool { return s.Restarts >= 1 })
	if !strings.HasPrefix(st.LastExit, "stop-timeout") {
		t.Errorf("stopper: last_exit %q, want stop-timeout", st.LastExit)
	}

	rl := r.waitState("reloader", control.StateRunning, 0)
	syscall.Kill(rl.Pid, syscall.SIGHUP)
	r.waitFor2("reloader", func(s control.Status) bool { return s.Reloading })
	if out := r.mustService("status", "reloader"); !strings.Contains(out, "running (reloading)") {
		t.Errorf("status while reloading:\n%s", out)
	}
	syscall.Kill(rl.Pid, syscall.SIGHUP)
	if s := r.waitFor2("reloader", func(s control.Status) bool { return !s.Reloading }); s.State != control.StateRunning || s.Restarts != 0 {
		t.Errorf("reloader after READY=1: %+v", s)
	}

	sl := r.waitState("slow", control.StateRunning, 0)
	if sl.Restarts != 0 || sl.LastExit != "" {
		t.Errorf("slow: restarts %d, last_exit %q: EXTEND_TIMEOUT_USEC not honoured", sl.Restarts, sl.LastExit)
	}
}

// TestNotifyUpdate: `service update` of a notify service starts the new
// instance beside the old one and stops the old one once the new one is
// ready; one that is not ready in time is stopped and the old one serves
// on. The output says there is no state transfer.
func TestNotifyUpdate(t *testing.T) {
	r := startRS(t, `
[service.n]
type = "notify"
binary = "$BIN/sdnotify"
args = ["-status", "v", "-never-ready-if", "$DIR/broken"]
init_timeout = "1s"
`)
	old := r.waitFor2("n", func(s control.Status) bool { return s.State == control.StateRunning && s.StatusText == "v" })
	out := r.mustService("update", "n")
	if !strings.Contains(out, "no state transfer") || !strings.Contains(out, "updated: pid "+strconv.Itoa(old.Pid)+" -> ") {
		t.Errorf("update: %q", out)
	}
	st := r.status("n")
	if st.State != control.StateRunning || st.Pid == old.Pid || st.Restarts != 0 {
		t.Errorf("after update: %+v", st)
	}
	r.waitFor("the old instance gone", func() bool { return !alive(old.Pid) })
	r.waitFor2("n", func(s control.Status) bool { return s.StatusText == "v" })

	if err := os.WriteFile(filepath.Join(r.dir, "broken"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, errs, code := r.service("update", "n")
	if code == 0 || !strings.Contains(errs, "rolled back") || !strings.Contains(errs, "init-timeout") ||
		!strings.Contains(errs, "pid "+strconv.Itoa(st.Pid)+" serves on") {
		t.Errorf("update to a never-ready instance: exit %d, %q", code, errs)
	}
	if after := r.status("n"); after.State != control.StateRunning || after.Pid != st.Pid || after.Restarts != 0 {
		t.Errorf("after the rolled-back update: %+v", after)
	}
}

// askPid sends one line on a new connection to the sdnotify fixture and
// returns the pid it answers with. refused: nothing listened.
func askPid(sock string) (pid int, refused bool, err error) {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return 0, errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT), err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := c.Write([]byte("x\n")); err != nil {
		return 0, false, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return 0, false, err
	}
	if _, err := fmt.Sscanf(line, "pid %d", &pid); err != nil {
		return 0, false, fmt.Errorf("answer %q: %w", line, err)
	}
	return pid, false, nil
}

// loadClient asks sock in a loop until stop is closed; it returns the
// count of answers, refused dials and other failures, and the pids that
// answered.
func loadClient(sock string, stop <-chan struct{}) <-chan loadResult {
	out := make(chan loadResult, 1)
	go func() {
		r := loadResult{pids: map[int]int{}}
		for {
			select {
			case <-stop:
				out <- r
				return
			default:
			}
			pid, refused, err := askPid(sock)
			switch {
			case err == nil:
				r.ok++
				r.pids[pid]++
			case refused:
				r.refused++
			default:
				r.failed++
				r.lastErr = err
			}
		}
	}()
	return out
}

type loadResult struct {
	ok, refused, failed int
	lastErr             error
	pids                map[int]int
}

// TestNotifyActivation: the go-systemd fixture takes its listener from
// rs's `listen` (activation.Listeners, with LISTEN_PID its own): three
// SIGKILLs under a client's load refuse no connection, and three
// updates (start beside, READY, stop the old one) fail no request.
func TestNotifyActivation(t *testing.T) {
	r := startRS(t, `
[service.act]
type   = "notify"
binary = "$BIN/sdnotify"
args   = ["-serve"]
listen = ["unix:$DIR/act.sock"]
`)
	sock := filepath.Join(r.dir, "act.sock")
	st := r.waitState("act", control.StateRunning, 0)
	if pid, _, err := askPid(sock); err != nil || pid != st.Pid {
		t.Fatalf("ask: pid %d, %v; want %d", pid, err, st.Pid)
	}
	stepsUnderLoad(r, "act", sock, "crash", func(prev control.Status) {
		syscall.Kill(prev.Pid, syscall.SIGKILL)
		r.waitState("act", control.StateRunning, prev.Pid)
	})
	up := stepsUnderLoad(r, "act", sock, "update", func(prev control.Status) {
		r.mustService("update", "act")
		r.waitState("act", control.StateRunning, prev.Pid)
	})
	if up.failed != 0 {
		t.Errorf("update: %d requests failed (last: %v), want 0", up.failed, up.lastErr)
	}
}

// stepsUnderLoad runs step three times on label while a client asks
// sock in a loop (each step once the instance of the one before has
// answered), and fails the test if a connection was refused or no new
// instance answered.
func stepsUnderLoad(r *rsProc, label, sock, name string, step func(prev control.Status)) loadResult {
	t := r.t
	t.Helper()
	stop := make(chan struct{})
	end := sync.OnceFunc(func() { close(stop) })
	t.Cleanup(end) // a step that fails the test ends the client too
	res := loadClient(sock, stop)
	for range 3 {
		prev := r.status(label)
		r.waitFor("an answer from pid "+strconv.Itoa(prev.Pid), func() bool {
			pid, _, err := askPid(sock)
			return err == nil && pid == prev.Pid
		})
		step(prev)
	}
	end()
	got := <-res
	t.Logf("%s: %d answered, %d refused, %d failed (last: %v), pids %v", name, got.ok, got.refused, got.failed, got.lastErr, got.pids)
	if got.refused != 0 {
		t.Errorf("%s: %d connections refused, want 0 (the listener is rs's)", name, got.refused)
	}
	if len(got.pids) < 2 {
		t.Errorf("%s: answers from pids %v, want the new instances too", name, got.pids)
	}
	return got
}

// TestNotifyExtendStop: a notify service that rs stops and that answers
// with STOPPING=1 and EXTEND_TIMEOUT_USEC= gets that long: it exits 0
// by itself a second later, long past its stop_grace of 100ms (each step
// of which would otherwise end in its group's SIGTERM, then SIGKILL).
func TestNotifyExtendStop(t *testing.T) {
	r := startRS(t, `
[service.slow]
type = "notify"
binary = "$BIN/sdnotify"
args = ["-slow-stop", "1s"]
stop_grace = "100ms"
`)
	st := r.waitState("slow", control.StateRunning, 0)
	r.mustService("down", "slow")
	r.waitFor("rs's log to say slow stopped with exit 0", func() bool {
		return strings.Contains(r.log.String(), `msg=stopped label=slow exit="exit 0"`)
	})
	if alive(st.Pid) {
		t.Errorf("pid %d alive after down", st.Pid)
	}
}

// TestNotifyMainPidBack: a MAINPID= naming the service's own process
// after one naming a child makes the process the main one again: the
// stop signal goes to it, not to the child named before.
func TestNotifyMainPidBack(t *testing.T) {
	r := startRS(t, "")
	leader := filepath.Join(r.dir, "leader")
	term := filepath.Join(r.dir, "term")
	r.mustService("up", "--type", "notify", "--binary", bin("roles"), "--args", "-role notify-mainpid-back "+leader+" "+term, "mp")
	r.waitFor2("mp", func(s control.Status) bool { return s.StatusText == "back" })
	r.mustService("down", "mp")
	if b, err := os.ReadFile(leader); err != nil || string(b) != "leader" {
		t.Errorf("the service's own process did not get the stop signal: %q %v", b, err)
	}
	if b, err := os.ReadFile(term); err == nil {
		t.Errorf("the child named by the first MAINPID= got the stop signal: %q", b)
	}
}
