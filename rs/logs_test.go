package rs

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// fakeLog writes a service's log file as the capture does: lines
// `<RFC 3339 UTC time, microseconds> <out|err> <text>`, rotation by
// renaming to <label>.log.1 (older ones shift), maybe compressed.
type fakeLog struct {
	t    *testing.T
	path string
	f    *os.File
	at   time.Time
}

func newFakeLog(t *testing.T, dir, label string, at time.Time) *fakeLog {
	l := &fakeLog{t: t, path: filepath.Join(dir, label+".log"), at: at}
	l.open()
	t.Cleanup(func() { l.f.Close() })
	return l
}

func (l *fakeLog) open() {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		l.t.Fatal(err)
	}
	l.f = f
}

// stamp is the time the next line gets (each line 1ms after the last).
func (l *fakeLog) stamp() string {
	l.at = l.at.Add(time.Millisecond)
	return l.at.UTC().Format("2006-01-02T15:04:05.000000Z")
}

// line appends one line and returns it as the file holds it.
func (l *fakeLog) line(stream, text string) string {
	s := l.stamp() + " " + stream + " " + text
	l.raw(s + "\n")
	return s
}

func (l *fakeLog) raw(s string) {
	if _, err := l.f.WriteString(s); err != nil {
		l.t.Fatal(err)
	}
}

// rotate shifts the rotated files up, renames the current one to .1
// (compressed when gz) and starts a new one.
func (l *fakeLog) rotate(gz bool) {
	for n := 8; n >= 1; n-- {
		for _, ext := range []string{"", ".gz"} {
			from := l.path + "." + strconv.Itoa(n) + ext
			if _, err := os.Stat(from); err == nil {
				os.Rename(from, l.path+"."+strconv.Itoa(n+1)+ext)
			}
		}
	}
	l.f.Close()
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		l.t.Fatal(err)
	}
	if gz {
		b, err := os.ReadFile(l.path + ".1")
		if err != nil {
			l.t.Fatal(err)
		}
		f, err := os.Create(l.path + ".1.gz")
		if err != nil {
			l.t.Fatal(err)
		}
		zw := gzip.NewWriter(f)
		zw.Write(b)
		zw.Close()
		f.Close()
		os.Remove(l.path + ".1")
	}
	l.open()
}

// logServer runs rs with services labels (down: the files are the
// test's) and log directory dir, and its control socket.
func logServer(t *testing.T, dir string, labels ...string) (*Server, control.Client) {
	t.Helper()
	s := New(Options{LogDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	go s.Run()
	inLoop(s, func() {
		for _, l := range labels {
			s.add(Spec{Label: l, Binary: "/bin/true", Restart: RestartNever})
		}
	})
	sock := filepath.Join(t.TempDir(), "rs.sock")
	ln, err := control.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctl := &control.Server{Handler: s.Handle, Stream: s.HandleStream, Keepalive: 50 * time.Millisecond}
	served := make(chan struct{})
	go func() { ctl.Serve(ln); close(served) }()
	t.Cleanup(func() {
		ln.Close()
		<-served
		s.Shutdown()
		<-s.Done()
		ctl.Wait(5 * time.Second)
	})
	return s, control.Client{Socket: sock, Timeout: 20 * time.Second}
}

func lines(n int) *int { return &n }

// logsOf asks for logs (no follow) and returns the lines, each as
// "label|line".
func logsOf(t *testing.T, c control.Client, req control.Request) ([]string, error) {
	t.Helper()
	req.Op = control.OpLogs
	var got []string
	_, err := c.Stream(context.Background(), req, func(r control.Reply) error {
		for _, l := range r.Logs {
			got = append(got, l.Label+"|"+l.Line)
		}
		return nil
	})
	return got, err
}

func labelled(label string, ls ...string) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = label + "|" + l
	}
	return out
}

func sameLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\ngot  %q\nwant %q", what, got, want)
	}
}

var t0 = time.Date(2026, 12, 2, 3, 45, 0, 0, time.UTC)

// The last N lines come from the current file and, when it holds fewer,
// the rotated ones (a compressed one too), oldest first; a line the
// writer has not ended yet is not among them; --since keeps the lines
// from then on.
func TestLogsLastLinesAcrossRotation(t *testing.T) {
	dir := t.TempDir()
	w := newFakeLog(t, dir, "kv", t0)
	var all []string
	for i := range 4 {
		all = append(all, w.line("out", fmt.Sprint("first file ", i)))
	}
	w.rotate(true)
	for i := range 4 {
		all = append(all, w.line("err", fmt.Sprint("second file ", i)))
	}
	w.rotate(false)
	for i := range 3 {
		all = append(all, w.line("out", fmt.Sprint("current ", i)))
	}
	w.raw(w.stamp() + " out not ended yet")
	_, c := logServer(t, dir, "kv")

	for _, tc := range []struct {
		name string
		req  control.Request
		want []string
	}{
		{"default", control.Request{Label: "kv"}, all[1:]},
		{"-n 10", control.Request{Label: "kv", Lines: lines(10)}, all[1:]},
		{"-n 100", control.Request{Label: "kv", Lines: lines(100)}, all},
		{"-n 2", control.Request{Label: "kv", Lines: lines(2)}, all[9:]},
		{"-n 5", control.Request{Label: "kv", Lines: lines(5)}, all[6:]},
		{"-n 0", control.Request{Label: "kv", Lines: lines(0)}, nil},
		// The sixth line's time: it and every later one.
		{"--since", control.Request{Label: "kv", SinceUs: t0.Add(6 * time.Millisecond).UnixMicro()}, all[5:]},
		{"--since -n 2", control.Request{Label: "kv", Lines: lines(2), SinceUs: t0.Add(2 * time.Millisecond).UnixMicro()}, all[9:]},
		{"--since later", control.Request{Label: "kv", SinceUs: t0.Add(time.Hour).UnixMicro()}, nil},
	} {
		got, err := logsOf(t, c, tc.req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		sameLines(t, tc.name, got, labelled("kv", tc.want...))
	}
}

// Without a label every service's lines come, merged by their time, each
// with its label; a label rs does not know is an error, and so is an rs
// without a log directory.
func TestLogsAllInterleavedAndUnknown(t *testing.T) {
	dir := t.TempDir()
	a := newFakeLog(t, dir, "a", t0)
	b := newFakeLog(t, dir, "b", t0.Add(500*time.Microsecond))
	var want []string
	for i := range 4 {
		want = append(want, "a|"+a.line("out", fmt.Sprint("a", i)), "b|"+b.line("err", fmt.Sprint("b", i)))
	}
	// c has no file at all: it has written nothing.
	_, cl := logServer(t, dir, "a", "b", "c")
	got, err := logsOf(t, cl, control.Request{Lines: lines(5)})
	if err != nil {
		t.Fatal(err)
	}
	sameLines(t, "every service, -n 5", got, want[3:])
	got, err = logsOf(t, cl, control.Request{Lines: lines(100)})
	if err != nil {
		t.Fatal(err)
	}
	sameLines(t, "every service, -n 100", got, want)

	if _, err := logsOf(t, cl, control.Request{Label: "nope"}); !errors.Is(err, control.ErrUnknown) {
		t.Errorf("unknown label: %v, want ErrUnknown", err)
	}
	// A label that is not a service's, however its file is named.
	os.WriteFile(filepath.Join(dir, "x.log"), []byte(a.stamp()+" out x\n"), 0o600)
	if _, err := logsOf(t, cl, control.Request{Label: "x"}); !errors.Is(err, control.ErrUnknown) {
		t.Errorf("a file but no service: %v, want ErrUnknown", err)
	}
	_, none := logServer(t, "", "a")
	if _, err := logsOf(t, none, control.Request{Label: "a"}); !errors.Is(err, control.ErrRefused) {
		t.Errorf("no log directory: %v, want ErrRefused", err)
	}
}

// follow reads a follow stream in its own goroutine; its lines come on
// the channel, and cancel ends it.
type follow struct {
	lines  chan string
	cancel func()
	done   chan struct{} // closed when it ended, with err
	err    error
}

func startFollow(t *testing.T, c control.Client, req control.Request) *follow {
	t.Helper()
	req.Op, req.Follow = control.OpLogs, true
	c.Timeout = 0
	ctx, cancel := context.WithCancel(context.Background())
	f := &follow{lines: make(chan string, 1000), cancel: cancel, done: make(chan struct{})}
	go func() {
		_, err := c.Stream(ctx, req, func(r control.Reply) error {
			for _, l := range r.Logs {
				f.lines <- l.Label + "|" + l.Line
			}
			return nil
		})
		f.err = err
		close(f.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-f.done
	})
	return f
}

// expect waits, bounded, for exactly these lines next.
func (f *follow) expect(t *testing.T, want ...string) {
	t.Helper()
	for _, w := range want {
		select {
		case l := <-f.lines:
			if l != w {
				t.Fatalf("got %q, want %q", l, w)
			}
		case <-f.done:
			t.Fatalf("the follow ended (%v) before %q", f.err, w)
		case <-time.After(20 * time.Second):
			t.Fatalf("%q did not come", w)
		}
	}
}

// -f goes on with new lines as they come: a line the writer ends later
// comes once, whole; across a rotation (rename, then a new file) lines
// written to the old file before the rename come, then the new file's;
// lines of three successive instances of the service come in one
// follow; a file truncated in place is read again from its start.
func TestLogsFollowAcrossRotation(t *testing.T) {
	dir := t.TempDir()
	w := newFakeLog(t, dir, "kv", t0)
	old := w.line("out", "before the follow")
	_, c := logServer(t, dir, "kv")
	f := startFollow(t, c, control.Request{Label: "kv", Lines: lines(1)})
	f.expect(t, "kv|"+old)

	first := w.line("out", "instance 1 started")
	stamp := w.stamp()
	w.raw(stamp + " err half")
	f.expect(t, "kv|"+first)
	w.raw(" a line\n")
	f.expect(t, "kv|"+stamp+" err half a line")

	// The writer renames, writes a last line into the old file (it still
	// holds it), then opens the new one.
	last := w.line("out", "instance 1 killed")
	w.f.Close()
	if err := os.Rename(w.path, w.path+".1"); err != nil {
		t.Fatal(err)
	}
	w.open()
	second := w.line("out", "instance 2 started")
	f.expect(t, "kv|"+last, "kv|"+second)

	w.rotate(true)
	third := w.line("err", "instance 3 (updated) started")
	f.expect(t, "kv|"+third)

	// copytruncate: same file, cut to nothing, written again.
	if err := w.f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	again := w.line("out", "after truncate")
	f.expect(t, "kv|"+again)

	// The file goes away and comes back.
	w.f.Close()
	os.Remove(w.path)
	w.open()
	back := w.line("out", "new file")
	f.expect(t, "kv|"+back)
	select {
	case l := <-f.lines:
		t.Fatalf("an extra line: %q", l)
	default:
	}
}

// A follow of every service gets each one's new lines, labelled, and a
// file created after the follow began.
func TestLogsFollowAll(t *testing.T) {
	dir := t.TempDir()
	a := newFakeLog(t, dir, "a", t0)
	la := a.line("out", "before")
	_, c := logServer(t, dir, "a", "b")
	f := startFollow(t, c, control.Request{Lines: lines(1)})
	f.expect(t, "a|"+la) // the follow has begun
	la = a.line("out", "from a")
	f.expect(t, "a|"+la)
	b := newFakeLog(t, dir, "b", t0)
	lb := b.line("err", "from b, its file new")
	f.expect(t, "b|"+lb)
	la = a.line("out", "\x1b[2Jraw bytes pass as data")
	f.expect(t, "a|"+la)
}

// A client that goes away mid-follow ends it: no goroutine and no fd of
// its stays behind; and a follow ends when rs stops.
func TestLogsFollowEndsWithClient(t *testing.T) {
	dir := t.TempDir()
	w := newFakeLog(t, dir, "kv", t0)
	l := w.line("out", "before")
	s, c := logServer(t, dir, "kv")
	goroutines, fds := runtime.NumGoroutine(), countFDs(t)
	for round := range 3 {
		f := startFollow(t, c, control.Request{Label: "kv", Lines: lines(1)})
		f.expect(t, "kv|"+l) // the follow has begun
		l = w.line("out", fmt.Sprint("round ", round))
		f.expect(t, "kv|"+l)
		f.cancel()
		<-f.done
	}
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > goroutines || countFDs(t) > fds {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines (%d before), %d fds (%d before):\n%s", runtime.NumGoroutine(), goroutines,
				countFDs(t), fds, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}

	f := startFollow(t, c, control.Request{Label: "kv", Lines: lines(1)})
	f.expect(t, "kv|"+l)
	s.Shutdown()
	select {
	case <-f.done:
		if f.err != nil {
			t.Fatalf("follow at rs's end: %v", f.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the follow did not end with rs")
	}
}

// What is under a log file's name is not trusted: a FIFO there does not
// hang logs (its open would wait for a writer), an endless line comes in
// pieces, and bytes that are not text pass as data.
func TestLogsHostileFiles(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.log"), 0o600); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 3*maxLogLine+5)
	junk := "2026-12-02T03:45:00.000001Z out \x00\xff\x1b]0;title\x07"
	os.WriteFile(filepath.Join(dir, "big.log.1"), []byte(long), 0o600)
	os.WriteFile(filepath.Join(dir, "big.log"), []byte(junk+"\n"), 0o600)
	_, c := logServer(t, dir, "fifo", "big")
	if _, err := logsOf(t, c, control.Request{Label: "fifo"}); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a FIFO: %v, want an error saying so", err)
	}
	got, err := logsOf(t, c, control.Request{Lines: lines(100)})
	if err != nil {
		t.Fatal(err)
	}
	want := labelled("big", long[:maxLogLine], long[maxLogLine:2*maxLogLine], long[2*maxLogLine:3*maxLogLine], long[3*maxLogLine:], junk)
	if len(got) != len(want) {
		t.Fatalf("%d lines, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: %d bytes %.40q, want %d bytes %.40q", i, len(got[i]), got[i], len(want[i]), want[i])
		}
	}
}

// What is sent before following is bounded in lines and bytes (the
// latest are kept), and a note says so; a count the caller gave is not
// a cut.
func TestLogsBounded(t *testing.T) {
	oldLines, oldBytes := maxLogLines, maxLogBytes
	maxLogLines, maxLogBytes = 5, 2000
	t.Cleanup(func() { maxLogLines, maxLogBytes = oldLines, oldBytes })
	dir := t.TempDir()
	w := newFakeLog(t, dir, "kv", t0)
	var all []string
	for i := range 20 {
		all = append(all, w.line("out", fmt.Sprint("line ", i, strings.Repeat(".", i*5))))
	}
	_, c := logServer(t, dir, "kv")
	ask := func(req control.Request) ([]string, []string) {
		var got, notes []string
		_, err := c.Stream(context.Background(), req, func(r control.Reply) error {
			if r.Message != "" {
				notes = append(notes, r.Message)
			}
			for _, l := range r.Logs {
				got = append(got, l.Line)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return got, notes
	}
	// --since alone: every line since, but at most 5.
	got, notes := ask(control.Request{Op: control.OpLogs, Label: "kv", SinceUs: t0.UnixMicro()})
	sameLines(t, "--since, 5 at most", got, all[15:])
	if len(notes) != 1 || !strings.Contains(notes[0], "only the latest lines") {
		t.Errorf("notes %q", notes)
	}
	// -n 3: three lines, within the bytes, no note.
	got, notes = ask(control.Request{Op: control.OpLogs, Label: "kv", Lines: lines(3)})
	sameLines(t, "-n 3", got, all[17:])
	if len(notes) != 0 {
		t.Errorf("-n 3: notes %q", notes)
	}
	// -n 5 of the longest lines: 400 bytes hold only some of them.
	maxLogBytes = 400
	got, notes = ask(control.Request{Op: control.OpLogs, Label: "kv", Lines: lines(5)})
	size := 0
	for _, l := range got {
		size += len(l)
	}
	if len(got) == 0 || len(got) >= 5 || size > 400 || got[len(got)-1] != all[19] || len(notes) != 1 {
		t.Errorf("-n 5 within 400 bytes: %d lines, %d bytes, notes %q", len(got), size, notes)
	}
}
