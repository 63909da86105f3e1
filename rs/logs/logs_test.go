package logs

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSplitLongLines: a line longer than MaxLine is cut into pieces of
// MaxLine, every one but the last marked with '+'; none is dropped,
// whether it arrives at once or a byte at a time, and a line without a
// newline waits for flush.
func TestSplitLongLines(t *testing.T) {
	ts := []byte("T")
	long := bytes.Repeat([]byte("x"), 2*MaxLine+10)
	exact := bytes.Repeat([]byte("y"), MaxLine)
	input := append(append(append([]byte("short\n"), long...), '\n'), exact...)
	input = append(input, "\ntail"...)
	want := "T out short\n" +
		"T out+ " + string(long[:MaxLine]) + "\n" +
		"T out+ " + string(long[MaxLine:2*MaxLine]) + "\n" +
		"T out " + string(long[2*MaxLine:]) + "\n" +
		"T out " + string(exact) + "\n"
	for _, chunk := range []int{len(input), 1, 4096, MaxLine + 1} {
		s := splitter{name: "out"}
		var out []byte
		for in := input; len(in) > 0; {
			n := min(chunk, len(in))
			out = s.feed(out, ts, in[:n])
			in = in[n:]
		}
		if string(out) != want {
			t.Errorf("chunk %d: got %d bytes, want %d (%q...)", chunk, len(out), len(want), trunc(out))
		}
		if len(s.partial) > MaxLine {
			t.Errorf("chunk %d: holds %d bytes", chunk, len(s.partial))
		}
		out = s.flush(out[:0], ts)
		if string(out) != "T out tail\n" {
			t.Errorf("chunk %d: flush %q", chunk, out)
		}
		if out = s.flush(out[:0], ts); len(out) != 0 {
			t.Errorf("chunk %d: second flush %q", chunk, out)
		}
	}
}

func trunc(b []byte) []byte {
	if len(b) > 80 {
		return b[:80]
	}
	return b
}

var lineRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (out|err)\+? `)

// waitFile waits until path's lines satisfy ok.
func waitFile(t *testing.T, path string, ok func(lines []string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if len(b) == 0 {
			lines = nil
		}
		if ok(lines) {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: timed out; has %d lines: %q", path, len(lines), lines[max(0, len(lines)-3):])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWriterFormat: both streams land in <label>.log in the documented
// format; a last line without a newline is written when Ended says the
// instance is gone.
func TestWriterFormat(t *testing.T) {
	dir := t.TempDir()
	w, err := New(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(time.Second)
	f, err := w.Add("svc", Config{})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(f.Stdout, "hello\nhalf")
	fmt.Fprint(f.Stderr, "oops\n")
	path := filepath.Join(dir, "svc.log")
	waitFile(t, path, func(l []string) bool { return len(l) == 2 })
	w.Ended("svc")
	lines := waitFile(t, path, func(l []string) bool { return len(l) == 3 })
	got := map[string]bool{}
	for _, l := range lines {
		if !lineRE.MatchString(l) {
			t.Errorf("line %q not in the format", l)
		}
		got[l[len("2006-01-02T15:04:05.000000Z "):]] = true
	}
	for _, want := range []string{"out hello", "err oops", "out half"} {
		if !got[want] {
			t.Errorf("no line %q in %q", want, lines)
		}
	}
	if st := w.Status("svc"); st.Err != "" {
		t.Errorf("status %+v", st)
	}
}

// TestRotation: the file is rotated at line ends before it passes
// MaxSize; Keep rotated files are kept, the oldest go; with Compress
// they are gzipped and decompress to whole lines. Nothing is lost among
// the files kept: the newest lines are all there, in order.
func TestRotation(t *testing.T) {
	for _, compress := range []bool{false, true} {
		t.Run(fmt.Sprint("compress=", compress), func(t *testing.T) {
			dir := t.TempDir()
			w, err := New(dir, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close(time.Second)
			const max, keep = 4096, 3
			f, err := w.Add("r", Config{MaxSize: max, Keep: keep, Compress: compress})
			if err != nil {
				t.Fatal(err)
			}
			const n = 2000
			go func() {
				for i := range n {
					fmt.Fprintf(f.Stdout, "line %06d\n", i)
				}
			}()
			path := filepath.Join(dir, "r.log")
			waitFile(t, path, func(l []string) bool {
				return len(l) > 0 && strings.HasSuffix(l[len(l)-1], fmt.Sprintf("line %06d", n-1))
			})
			ext := ""
			if compress {
				ext = ".gz"
				// Wait for the last compression to end.
				deadline := time.Now().Add(10 * time.Second)
				for {
					if m, _ := filepath.Glob(path + ".rotated-*"); len(m) == 0 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("rotated files still uncompressed")
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			var all []string
			for i := keep; i >= 1; i-- {
				name := fmt.Sprintf("%s.%d%s", path, i, ext)
				b, err := os.ReadFile(name)
				if err != nil {
					t.Fatalf("rotated file %d: %v", i, err)
				}
				if compress {
					zr, err := gzip.NewReader(bytes.NewReader(b))
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					if b, err = io.ReadAll(zr); err != nil {
						t.Fatalf("%s: %v", name, err)
					}
				}
				// A compressor that falls behind (16 files) holds rotation
				// back, and the file grows past max meanwhile.
				if (len(b) > max && !compress) || len(b) == 0 || b[len(b)-1] != '\n' {
					t.Errorf("%s: %d bytes (max %d), last byte %q", name, len(b), max, b[len(b)-1:])
				}
				all = append(all, strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")...)
			}
			for _, gone := range []string{fmt.Sprintf("%s.%d", path, keep+1), fmt.Sprintf("%s.%d.gz", path, keep+1)} {
				if _, err := os.Stat(gone); err == nil {
					t.Errorf("%s kept beyond keep = %d", gone, keep)
				}
			}
			cur, _ := os.ReadFile(path)
			all = append(all, strings.Split(strings.TrimSuffix(string(cur), "\n"), "\n")...)
			first := -1
			for i, l := range all {
				var k int
				if _, err := fmt.Sscanf(l[len("2006-01-02T15:04:05.000000Z out "):], "line %d", &k); err != nil {
					t.Fatalf("line %q: %v", l, err)
				}
				if i == 0 {
					first = k
				} else if k != first+i {
					t.Fatalf("line %d is %d, want %d: lost or doubled", i, k, first+i)
				}
			}
			if first+len(all) != n {
				t.Errorf("last line %d, want %d", first+len(all)-1, n-1)
			}
		})
	}
}

// TestReopen: after the file is moved away (an external logrotate),
// Reopen makes the writer start a new one.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	w, err := New(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(time.Second)
	f, _ := w.Add("x", Config{})
	path := filepath.Join(dir, "x.log")
	fmt.Fprintln(f.Stdout, "before")
	waitFile(t, path, func(l []string) bool { return len(l) == 1 })
	if err := os.Rename(path, path+".old"); err != nil {
		t.Fatal(err)
	}
	w.Reopen()
	fmt.Fprintln(f.Stdout, "after")
	lines := waitFile(t, path, func(l []string) bool { return len(l) == 1 })
	if !strings.HasSuffix(lines[0], " out after") {
		t.Errorf("new file: %q", lines)
	}
	old, _ := os.ReadFile(path + ".old")
	if strings.Contains(string(old), "after") {
		t.Errorf("the moved file got the line written after Reopen: %q", old)
	}
}

// TestBusy: a flood makes the Writer busy at once (its busy callback,
// with which rs takes a second P), grows the flooding pipe, and the
// Writer says it is quiet again once the flood is over; its goroutine's
// thread runs at a lower priority than the rest of the process.
func TestBusy(t *testing.T) {
	busy := make(chan bool, 4)
	w, err := New(t.TempDir(), nil, func(b bool) { busy <- b })
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(10 * time.Second)
	f, err := w.Add("flood", Config{})
	if err != nil {
		t.Fatal(err)
	}
	sz, err := unix.FcntlInt(f.Stdout.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil || sz >= floodPipe {
		t.Fatalf("new pipe: size %d (%v), want under %d", sz, err, floodPipe)
	}
	// More than the pipe holds, in one write: the writer finds it full.
	line := bytes.Repeat([]byte("x"), 99)
	chunk := bytes.Repeat(append(line, '\n'), 20000)
	if _, err := f.Stdout.Write(chunk); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-busy:
		if !b {
			t.Fatal("first call says quiet")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a flood did not make the writer busy")
	}
	if sz, err = unix.FcntlInt(f.Stdout.Fd(), unix.F_GETPIPE_SZ, 0); err != nil || sz != floodPipe {
		t.Errorf("flooding pipe: size %d (%v), want %d", sz, err, floodPipe)
	}
	select {
	case b := <-busy:
		if b {
			t.Fatal("busy twice")
		}
	case <-time.After(quietAfter + 10*time.Second):
		t.Fatal("the writer never turned quiet")
	}
	// The writer's thread is the one whose nice value is writerNice,
	// never the main thread, and it ends with the Writer.
	if n := nicedThreads(); len(n) != 1 || n[0] == os.Getpid() {
		t.Errorf("threads at nice %d: %v, want one, not the main thread (%d)", writerNice, n, os.Getpid())
	}
	w.Close(10 * time.Second)
	for deadline := time.Now().Add(10 * time.Second); len(nicedThreads()) > 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("threads at nice %d after Close: %v", writerNice, nicedThreads())
		}
	}
}

// nicedThreads returns the process's threads at nice writerNice.
func nicedThreads() (tids []int) {
	tasks, _ := filepath.Glob("/proc/self/task/*/stat")
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // gone
		}
		// Field 19 (nice) is the 17th after the ")" that ends field 2.
		fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(fields) > 16 && fields[16] == fmt.Sprint(writerNice) {
			tid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			tids = append(tids, tid)
		}
	}
	return tids
}

// TestRetire: a new mode for a label retires its old pipes: what a
// process still holding them writes is still written to the file, and
// the old pipes are closed once it lets go of them. A start's Dup is
// its own: the Writer closing its files leaves the dup working.
func TestRetire(t *testing.T) {
	dir := t.TempDir()
	w, err := New(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(time.Second)
	fdsBefore := openFDs(t)
	f, err := w.Add("svc", Config{})
	if err != nil {
		t.Fatal(err)
	}
	held, err := f.Dup() // an instance still stopping holds these
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(held.Stdout, "before")
	if _, err := w.Add("svc", Config{Mode: ModeNull}); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(held.Stdout, "after the new mode")
	fmt.Fprintln(held.Stderr, "last words")
	path := filepath.Join(dir, "svc.log")
	lines := waitFile(t, path, func(l []string) bool { return len(l) == 3 })
	for i, want := range []string{"out before", "out after the new mode", "err last words"} {
		if !strings.HasSuffix(lines[i], " "+want) {
			t.Errorf("line %d: %q, want %q", i, lines[i], want)
		}
	}
	held.Close()
	// The retired pipes' read ends go once nobody writes to them (the
	// null mode's /dev/null was open before).
	for deadline := time.Now().Add(10 * time.Second); openFDs(t) > fdsBefore; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("fds %d, %d before the pipes: the retired pipes were not closed", openFDs(t), fdsBefore)
		}
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestYield: while a service recovers, a service that floods is not
// read (its output waits in its pipe), the recovering one's is; at
// Recovered, or when the bound passes, the flood is read with nothing
// lost.
func TestYield(t *testing.T) {
	dir := t.TempDir()
	w, err := New(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(10 * time.Second)
	flood, err := w.Add("flood", Config{})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := w.Add("kv", Config{})
	if err != nil {
		t.Fatal(err)
	}
	lines := func(n int) func([]string) bool { return func(l []string) bool { return len(l) >= n } }
	chunk := bytes.Repeat([]byte(strings.Repeat("f", 99)+"\n"), 640) // 64000 bytes: a flooding read
	pending := func() int {
		n, err := unix.IoctlGetInt(int(flood.Stdout.Fd()), unix.TIOCINQ) // FIONREAD
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	kvLines := 0
	kvSays := func() {
		t.Helper()
		kvLines++
		fmt.Fprintf(kv.Stdout, "kv %d\n", kvLines)
		waitFile(t, filepath.Join(dir, "kv.log"), lines(kvLines))
	}
	floodLog := filepath.Join(dir, "flood.log")
	for round, end := range []string{"recovered", "bound"} {
		if _, err := flood.Stdout.Write(chunk); err != nil {
			t.Fatal(err)
		}
		waitFile(t, floodLog, lines((2*round+1)*640)) // it floods: read at once
		bound := 10 * time.Second
		if end == "bound" {
			bound = 100 * time.Millisecond
		}
		w.Yield("kv", bound)
		// Two of kv's lines, each in the file before the next is
		// written: the Writer has taken the Yield and waited for its
		// pipes again at least once since.
		kvSays()
		kvSays()
		if _, err := flood.Stdout.Write(chunk); err != nil {
			t.Fatal(err)
		}
		kvSays()
		kvSays()
		if end == "recovered" {
			if n := pending(); n != len(chunk) {
				t.Fatalf("while kv recovers, flood's pipe holds %d bytes, want %d (not read)", n, len(chunk))
			}
			w.Recovered("kv")
		}
		waitFile(t, floodLog, lines((2*round+2)*640))
		if n := pending(); n != 0 {
			t.Errorf("%s: flood's pipe still holds %d bytes", end, n)
		}
	}
}

// TestFreezeAdopt: Freeze writes out what was read (a half line as a
// line) and stops reading; a second Writer that adopts the pipes (as a
// new rs does after an exec in place) reads on what was written
// meanwhile and after, into the same file.
func TestFreezeAdopt(t *testing.T) {
	dir := t.TempDir()
	w1, err := New(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := w1.Add("svc", Config{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "svc.log")
	fmt.Fprint(f.Stdout, "one\nhalf")
	waitFile(t, path, func(l []string) bool { return len(l) == 1 })
	got := make(chan map[string]Held, 1)
	w1.Freeze(func(h map[string]Held, err error) {
		if err != nil {
			t.Error(err)
		}
		got <- h
	})
	var h Held
	select {
	case m := <-got:
		h = m["svc"]
	case <-time.After(10 * time.Second):
		t.Fatal("Freeze did not answer")
	}
	waitFile(t, path, func(l []string) bool { return len(l) == 2 }) // "half", written out
	fmt.Fprint(f.Stdout, "two\n")                                   // waits in the pipe
	// The new Writer gets its own copies (w1 still holds its fds here).
	dup := func(fd int) int {
		n, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	w2, err := New(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f2, err := w2.Adopt("svc", Config{}, Held{OutR: dup(h.OutR), OutW: dup(h.OutW), ErrR: dup(h.ErrR), ErrW: dup(h.ErrW)})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(f2.Stderr, "three\n")
	lines := waitFile(t, path, func(l []string) bool { return len(l) == 4 })
	var text []string
	for _, l := range lines {
		text = append(text, l[len("2006-01-02T15:04:05.000000Z "):])
	}
	if want := []string{"out one", "out half", "out two", "err three"}; !slices.Equal(text, want) {
		t.Errorf("lines %q, want %q", text, want)
	}
	w2.Close(time.Second)
	w1.Close(time.Second)
}
