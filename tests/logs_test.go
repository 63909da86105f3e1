package tests

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/rs/control"
)

// One `service logs -f` shows the lines of three successive instances of
// a service: the first, the one rs starts after SIGKILL of it, and the
// one a live update starts; and `service logs` shows the last lines
// labelled when no label is given.
func TestLogsFollowAcrossInstances(t *testing.T) {
	r := startRS(t, `
[service.say]
binary = "$BIN/roles"
args = ["-role", "say"]
`)
	first := r.waitState("say", control.StateRunning, 0)
	outLine := func(pid int) *regexp.Regexp {
		return regexp.MustCompile(fmt.Sprintf(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z out say out pid=%d$`, pid))
	}
	// The first instance's line is in the file: the follow begins with it.
	r.waitFor("the first line in the log", func() bool {
		out, _, _ := r.service("logs", "-n", "2", "say")
		return strings.Contains(out, fmt.Sprintf("pid=%d", first.Pid))
	})
	lines := r.follow("logs", "-f", "-n", "2", "say")
	// next waits for a line that matches re; the only others allowed are
	// stderr lines (the role's own, and sef's log lines).
	errLine := regexp.MustCompile(`^\S+ err `)
	next := func(re *regexp.Regexp) { t.Helper(); nextLine(t, lines, re, errLine) }
	next(outLine(first.Pid))

	syscall.Kill(first.Pid, syscall.SIGKILL)
	second := r.waitState("say", control.StateRunning, first.Pid)
	next(outLine(second.Pid))

	r.mustService("update", "say")
	third := r.waitState("say", control.StateRunning, second.Pid)
	next(outLine(third.Pid))

	out := r.mustService("logs", "-n", "1")
	if !regexp.MustCompile(`^say \| \S+ (out|err) .+\n$`).MatchString(out) {
		t.Errorf("logs of every service: %q", out)
	}
}

// nextLine waits (bounded) for a line of lines that matches re; other
// lines must match skip (nil: any is skipped).
func nextLine(t *testing.T, lines <-chan string, re, skip *regexp.Regexp) {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the follow ended before %v", re)
			}
			if re.MatchString(l) {
				return
			}
			if skip != nil && !skip.MatchString(l) {
				t.Fatalf("unexpected line %q waiting for %v", l, re)
			}
		case <-timeout:
			t.Fatalf("no line matching %v", re)
		}
	}
}

// follow runs `service args...` (a logs -f) until the test ends and
// returns its output's lines.
func (r *rsProc) follow(args ...string) <-chan string {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin("service"), append([]string{"--socket", r.sock}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		r.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { cancel(); cmd.Wait() })
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return lines
}

// A line of a service's log file: time, stream, text.
var logLineRE = regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (out|err)(\+?) (.*)$`)

// logLines reads a service's log file as (stream, text) pairs; lines not
// in the format fail the test.
func (r *rsProc) logLines(label string) [][2]string {
	r.t.Helper()
	b, err := os.ReadFile(filepath.Join(r.logDir, label+".log"))
	if err != nil {
		return nil
	}
	var out [][2]string
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if l == "" {
			continue
		}
		if !strings.HasSuffix(l, "\n") {
			return out // being written
		}
		m := logLineRE.FindStringSubmatch(strings.TrimSuffix(l, "\n"))
		if m == nil {
			r.t.Fatalf("%s.log: line %.100q is not in the format", label, l)
		}
		out = append(out, [2]string{m[2] + m[3], m[4]})
	}
	return out
}

// waitLog waits until label's log lines satisfy ok, and returns them.
func (r *rsProc) waitLog(label string, ok func([][2]string) bool) [][2]string {
	r.t.Helper()
	var lines [][2]string
	r.waitFor(label+"'s log", func() bool {
		lines = r.logLines(label)
		return ok(lines)
	})
	return lines
}

// TestLastWordsKept: what a service writes on both streams just before
// it is SIGKILLed is in its log file, a last line without a newline too.
func TestLastWordsKept(t *testing.T) {
	r := startRS(t, `
[service.lw]
binary = "$BIN/roles"
args = ["-role", "last-words"]
restart = "never"
`)
	want := map[[2]string]bool{{"out", "no newline at the end"}: true}
	for i := range 200 {
		want[[2]string{"out", fmt.Sprint("word ", i)}] = true
		want[[2]string{"err", fmt.Sprint("eword ", i)}] = true
	}
	r.waitLog("lw", func(lines [][2]string) bool {
		n := 0
		for _, l := range lines {
			if want[l] {
				n++
			}
		}
		return n == len(want)
	})
	if st := r.status("lw"); !strings.Contains(st.LastExit, "SIGKILL") {
		t.Errorf("last_exit %q, want SIGKILL", st.LastExit)
	}
}

// TestLogAcrossUpdates: a service writing a numbered line every
// millisecond, updated live three times, writes on into the same file:
// the numbers run on with no gap and no repeat.
func TestLogAcrossUpdates(t *testing.T) {
	r := startRS(t, `
[service.counter]
binary = "$BIN/roles"
args = ["-role", "counter"]
`)
	numbers := func(lines [][2]string) []int {
		var ns []int
		for _, l := range lines {
			if v, ok := strings.CutPrefix(l[1], "n "); ok && l[0] == "out" {
				n, err := strconv.Atoi(v)
				if err != nil {
					t.Fatalf("line %q", l)
				}
				ns = append(ns, n)
			}
		}
		return ns
	}
	r.waitState("counter", control.StateRunning, 0)
	pids := map[int]bool{}
	for u := range 3 {
		before := len(numbers(r.logLines("counter")))
		r.waitLog("counter", func(l [][2]string) bool { return len(numbers(l)) >= before+50 })
		pids[r.status("counter").Pid] = true
		if _, errOut, code := r.service("update", "counter"); code != 0 {
			t.Fatalf("update %d: exit %d: %s", u, code, errOut)
		}
	}
	st := r.waitState("counter", control.StateRunning, 0)
	if pids[st.Pid] || len(pids) != 3 {
		t.Fatalf("not three updates: pids %v, now %d", pids, st.Pid)
	}
	before := len(numbers(r.logLines("counter")))
	ns := numbers(r.waitLog("counter", func(l [][2]string) bool { return len(numbers(l)) >= before+50 }))
	for i, n := range ns {
		if n != i {
			t.Fatalf("line %d is n %d: a number lost or doubled (around: %v)", i, n, ns[max(0, i-3):min(len(ns), i+3)])
		}
	}
	if st.Restarts != 0 {
		t.Errorf("restarts %d: the count would start again", st.Restarts)
	}
}

// TestFloodDoesNotStallOthers: rs's own stderr is a pipe nobody reads
// (a paused terminal), one service floods lines of 64 KiB + 1, and an
// innocent service that says a line at each init is SIGKILLed again
// and again: it is reincarnated each time and status answers, since each
// service writes into pipes of its own, read by rs's log writer.
func TestFloodDoesNotStallOthers(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	r := startRSTo(t, `
[service.flood]
binary = "$BIN/roles"
args = ["-role", "flood-lines"]

[service.innocent]
binary = "$BIN/roles"
args = ["-role", "says-up"]
backoff_base = "10ms"
backoff_cap = "10ms"
`, pw)
	r.waitState("innocent", control.StateRunning, 0)
	// The flood is under way: its file grows past a few lines of 64 KiB.
	r.waitFor("the flood", func() bool {
		fi, err := os.Stat(filepath.Join(r.logDir, "flood.log"))
		return err == nil && fi.Size() > 4<<20
	})
	for i := range 5 {
		st := r.status("innocent")
		if err := syscall.Kill(st.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		r.waitState("innocent", control.StateRunning, st.Pid)
		r.waitLog("innocent", func(l [][2]string) bool {
			return len(l) > 0 && l[len(l)-1] == [2]string{"err", fmt.Sprint("up, restarts ", i+1)}
		})
	}
	// Lines longer than 64 KiB come in two pieces, the first marked.
	lines := r.logLines("flood")
	if len(lines) < 4 {
		t.Fatalf("flood.log: %d lines", len(lines))
	}
	for i, l := range lines[:len(lines)-len(lines)%2] {
		if want := map[bool]string{true: "out+", false: "out"}[i%2 == 0]; l[0] != want || len(l[1]) != map[bool]int{true: 64 << 10, false: 1}[i%2 == 0] {
			t.Fatalf("flood.log line %d: stream %q, %d bytes", i, l[0], len(l[1]))
		}
	}
}

// TestInheritCannotTouchRSStderr: with log = "inherit" a service writes
// to rs's stderr through an open file description of its own: setting
// O_NONBLOCK on it leaves rs's fd 2 as it was.
func TestInheritCannotTouchRSStderr(t *testing.T) {
	dir := t.TempDir()
	done := filepath.Join(dir, "done")
	r := startRS(t, fmt.Sprintf(`
[service.nb]
binary = "$BIN/roles"
args = ["-role", "nonblock-stderr", %q]
log = "inherit"
`, done))
	r.waitFor("the service to set O_NONBLOCK", func() bool { _, err := os.Stat(done); return err == nil })
	r.waitFor("its line on rs's stderr", func() bool { return strings.Contains(r.log.String(), "stderr set non-blocking") })
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/2", r.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var flags int64 = -1
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "flags:"); ok {
			flags, _ = strconv.ParseInt(strings.TrimSpace(v), 8, 64)
		}
	}
	if flags < 0 || flags&unix.O_NONBLOCK != 0 {
		t.Fatalf("rs's fd 2 flags %o: O_NONBLOCK set by a service (fdinfo %q)", flags, b)
	}
	if _, err := os.Stat(filepath.Join(r.logDir, "nb.log")); err == nil {
		t.Errorf("log = inherit made a log file")
	}
}

// TestRotationUnderRS: a service's file is rotated at log_max_size into
// log_keep gzipped files, with no restart.
func TestRotationUnderRS(t *testing.T) {
	r := startRS(t, `
[service.rot]
binary = "$BIN/roles"
args = ["-role", "numbered", "200"]
log_max_size = "16KiB"
log_keep = 2
log_compress = true
`)
	st := r.waitState("rot", control.StateRunning, 0)
	base := filepath.Join(r.logDir, "rot.log")
	r.waitFor("two gzipped rotations", func() bool {
		_, e1 := os.Stat(base + ".1.gz")
		_, e2 := os.Stat(base + ".2.gz")
		return e1 == nil && e2 == nil
	})
	for _, gone := range []string{".3", ".3.gz"} {
		if _, err := os.Stat(base + gone); err == nil {
			t.Errorf("rot.log%s kept beyond log_keep = 2", gone)
		}
	}
	out, err := exec.Command("gzip", "-dc", base+".2.gz").Output()
	if err != nil {
		t.Fatalf("gzip -dc rot.log.2.gz: %v", err)
	}
	if len(out) == 0 || len(out) > 16<<10 || !logLineRE.MatchString(strings.SplitN(string(out), "\n", 2)[0]) {
		t.Errorf("rot.log.2.gz: %d bytes, starts %.80q", len(out), out)
	}
	if now := r.status("rot"); now.Pid != st.Pid || now.Restarts != 0 {
		t.Errorf("rotation restarted the service: %+v, was pid %d", now, st.Pid)
	}
}

// TestFullDiskRecovers: the log directory is a 1 MiB tmpfs. A service
// writes numbered lines until it fills: rs goes on serving (status
// answers, another service is reincarnated), status says logging fails
// for the writer; when space returns writing resumes, and the numbers in
// the file run on with none lost.
func TestFullDiskRecovers(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip(needsRoot)
	}
	r := startRS(t, "")
	if err := os.Mkdir(r.logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", r.logDir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", r.logDir).Run() })
	r.mustService("up", "--binary", bin("roles"), "--args", "-role says-up", "innocent")
	r.mustService("up", "--binary", bin("roles"), "--args", "-role numbered 1000", "filler")
	st := r.waitFor2("filler", func(st control.Status) bool { return st.LogError != "" })
	if !strings.Contains(st.LogError, "no space left") {
		t.Errorf("log_error %q, want ENOSPC's", st.LogError)
	}
	// rs serves: another service is reincarnated, and status answers.
	inn := r.status("innocent")
	if inn.LogError != "" {
		t.Errorf("innocent's log_error %q: its first line fitted", inn.LogError)
	}
	syscall.Kill(inn.Pid, syscall.SIGKILL)
	r.waitState("innocent", control.StateRunning, inn.Pid)
	if now := r.status("filler"); now.State != control.StateRunning || now.LogError == "" {
		t.Errorf("filler while the disk is full: %+v", now)
	}
	// The text status says so too, under the table.
	if out := r.mustService("status"); !strings.Contains(out, "filler: log writing fails") || !strings.Contains(out, "no space left") {
		t.Errorf("service status does not say filler's logging fails:\n%s", out)
	}
	fi, _ := os.Stat(filepath.Join(r.logDir, "filler.log"))
	full := fi.Size()
	if out, err := exec.Command("mount", "-o", "remount,size=4m", r.logDir).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v: %s", err, out)
	}
	r.waitFor2("filler", func(st control.Status) bool { return st.LogError == "" })
	r.waitFor("the file to grow", func() bool {
		fi, err := os.Stat(filepath.Join(r.logDir, "filler.log"))
		return err == nil && fi.Size() > full+1<<20
	})
	lines := r.logLines("filler")
	n := 0
	for _, l := range lines {
		if l[0] != "out" {
			continue // sef's own lines
		}
		var k int
		if _, err := fmt.Sscanf(l[1], "n %d ", &k); err != nil {
			t.Fatalf("line %.80q: %v", l[1], err)
		}
		if k != n {
			t.Fatalf("line n %d where n %d was due: lost or doubled", k, n)
		}
		n++
	}
	if n < 1000 {
		t.Errorf("only %d lines", n)
	}
}

// TestRSLogFile: with --log-file rs's own lines go to that file, not to
// its stderr; after the file is moved away, SIGUSR1 and then `service
// logs --reopen` each make rs write a new one.
func TestRSLogFile(t *testing.T) {
	r := startRS(t, `
[service.kv]
binary = "$BIN/kv"
args = ["--listen", "127.0.0.1:0"]
`, "--log-file", "$DIR/rs.log")
	path := filepath.Join(r.dir, "rs.log")
	r.waitState("kv", control.StateRunning, 0)
	r.waitFor("rs started in rs.log", func() bool {
		b, _ := os.ReadFile(path)
		return strings.Contains(string(b), `msg="rs started"`) && strings.Contains(string(b), "label=kv")
	})
	if s := r.log.String(); strings.Contains(s, "rs started") {
		t.Errorf("rs's stderr has its log lines with --log-file:\n%s", s)
	}
	moved := func(n int) string {
		old := fmt.Sprintf("%s.%d", path, n)
		if err := os.Rename(path, old); err != nil {
			t.Fatal(err)
		}
		return old
	}
	reopened := func(how string, old string) {
		// Lines rs writes only after the reopen: kv's restart.
		was := r.status("kv").Pid
		r.mustService("restart", "kv")
		spawned := fmt.Sprintf("msg=spawned label=kv pid=%d ", r.waitState("kv", control.StateRunning, was).Pid)
		r.waitFor(how+": a new rs.log with the restart", func() bool {
			b, _ := os.ReadFile(path)
			return strings.Contains(string(b), spawned)
		})
		if b, _ := os.ReadFile(old); strings.Contains(string(b), spawned) {
			t.Errorf("%s: the moved file got a line written after the reopen", how)
		}
	}
	old := moved(1)
	r.cmd.Process.Signal(syscall.SIGUSR1)
	r.waitFor("SIGUSR1 logged", func() bool {
		b1, _ := os.ReadFile(old)
		b2, _ := os.ReadFile(path)
		return strings.Contains(string(b1)+string(b2), "SIGUSR1")
	})
	reopened("SIGUSR1", old)
	old = moved(2)
	r.mustService("logs", "--reopen")
	reopened("service logs --reopen", old)
}

// TestLogsFollowEveryService: `service logs -f` without a label follows
// the services there are, and also one added with `service up` after it
// began, from that service's first line.
func TestLogsFollowEveryService(t *testing.T) {
	r := startRS(t, `
[service.say]
binary = "$BIN/roles"
args = ["-role", "say"]
`)
	first := r.waitState("say", control.StateRunning, 0)
	r.waitFor("say's line in its log", func() bool {
		out, _, _ := r.service("logs", "-n", "5", "say")
		return strings.Contains(out, fmt.Sprintf("pid=%d", first.Pid))
	})
	lines := r.follow("logs", "-f", "-n", "0")
	wait := func(re *regexp.Regexp) { t.Helper(); nextLine(t, lines, re, nil) }
	// The follow runs: a new instance of say shows.
	syscall.Kill(first.Pid, syscall.SIGKILL)
	second := r.waitState("say", control.StateRunning, first.Pid)
	wait(regexp.MustCompile(fmt.Sprintf(`^say \| \S+ out say out pid=%d$`, second.Pid)))
	// A service added after the follow began: its first line shows.
	r.mustService("up", "--binary", bin("roles"), "--args", "-role say", "later")
	later := r.status("later")
	wait(regexp.MustCompile(fmt.Sprintf(`^later \| \S+ out say out pid=%d$`, later.Pid)))
}

// TestFollowAcrossUpdateSelf: `service logs -f` and `service events` go
// on across update-self, whose exec closes their connections: the follow
// asks the new rs from a little before the cut, and prints every counter
// line once, none lost and none twice; events shows the new rs's events.
func TestFollowAcrossUpdateSelf(t *testing.T) {
	r := startRS(t, `
[service.counter]
binary = "$BIN/roles"
args = ["-role", "counter"]

[service.p]
binary = "$BIN/roles"
args = ["-role", "plain"]
`)
	r.waitState("counter", control.StateRunning, 0)
	r.waitState("p", control.StateRunning, 0)
	lines := r.follow("logs", "-f", "-n", "0", "counter")
	events := r.follow("events", "p")
	counterLine := regexp.MustCompile(`^\S+ out n (\d+)$`)
	var ns []int
	// upTo reads the follow until it printed n lines of the counter.
	upTo := func(n int) {
		t.Helper()
		timeout := time.After(waitTimeout)
		for len(ns) < n {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the follow ended after %d counter lines", len(ns))
				}
				if m := counterLine.FindStringSubmatch(l); m != nil {
					v, _ := strconv.Atoi(m[1])
					ns = append(ns, v)
				}
			case <-timeout:
				t.Fatalf("%d counter lines of %d", len(ns), n)
			}
		}
	}
	upTo(50)
	for range 3 {
		r.mustService("update-self")
		upTo(len(ns) + 300) // 300 ms of the counter at least: lines from after the exec
		r.mustService("restart", "p")
		nextLine(t, events, regexp.MustCompile(` p ready `), nil)
	}
	for i := 1; i < len(ns); i++ {
		if ns[i] != ns[i-1]+1 {
			t.Fatalf("after n %d came n %d: a line lost or printed twice (around: %v)", ns[i-1], ns[i], ns[max(0, i-3):min(len(ns), i+3)])
		}
	}
}

// TestFollowEndsWhenRSDies: a follow whose rs is killed asks again,
// finds nothing listening on the socket, and ends with an error at once
// rather than waiting out its bound.
func TestFollowEndsWhenRSDies(t *testing.T) {
	r := startRS(t, `
[service.say]
binary = "$BIN/roles"
args = ["-role", "say"]
`)
	r.waitState("say", control.StateRunning, 0)
	cmd := exec.Command(bin("service"), "--socket", r.sock, "logs", "-f", "say")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb syncBuffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() { // the follow runs: its first line came
		t.Fatalf("no line from the follow: %s", errb.String())
	}
	r.cmd.Process.Kill()
	select {
	case <-r.done:
	case <-time.After(waitTimeout):
		t.Fatal("rs did not die of SIGKILL")
	}
	ended := make(chan error, 1)
	go func() {
		for sc.Scan() {
		}
		ended <- cmd.Wait()
	}()
	select {
	case err := <-ended:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !strings.Contains(errb.String(), "rs closed the connection") || !strings.Contains(errb.String(), "not running") {
			t.Fatalf("the follow ended with %v, stderr %q", err, errb.String())
		}
	case <-time.After(waitTimeout):
		t.Fatalf("the follow did not end after rs died: %q", errb.String())
	}
}
