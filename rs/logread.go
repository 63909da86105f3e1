package rs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/reincarnation/rs/rs/control"
	"github.com/reincarnation/rs/rs/logs"
)

// Reading the services' log files for `service logs`. It all happens on
// the control connection's goroutine, never on the loop, which only says
// which labels there are and where the files are (logTargets).
//
// A service's log is LOGDIR/<label>.log, rotated to <label>.log.1, .2, ...
// (each maybe gzip-compressed: .log.1.gz); each line begins with its time
// (RFC 3339, UTC) and its stream. The writer may rename, create or
// truncate any of them at any moment, so:
//   - the files are opened newest first, and a file met twice (renamed to
//     .1 between two opens) is read once (same inode): a rotation while
//     they are opened loses no file;
//   - the current file is read up to the size it had when opened, and
//     only whole lines: a line the writer is still writing is sent whole
//     by the follow;
//   - following keeps the file open and reads it at its own offset; when
//     the name points to another file (rotated) it reads the old one to
//     its end, then the new one from its start; a file that shrank under
//     the same name (copytruncate) is read again from its start.
//
// A line longer than maxLogLine (the writer cuts its lines at 64 KiB, so
// only a file someone else wrote) is sent in pieces of that size.

// The bounds of what logs sends before it follows (tests lower them).
var (
	maxLogLines = control.MaxLogLines
	maxLogBytes = control.MaxLogBytes
)

// logPoll is how often a follow looks at its files.
const logPoll = 100 * time.Millisecond

// logNewEvery: a follow of every service looks this often for services
// added since it began.
const logNewEvery = time.Second

const (
	maxLogLine   = 1 << 20
	logChunk     = 1 << 20   // read per file per poll while following
	logBatch     = 256       // lines per reply piece...
	logBatchSize = 256 << 10 // ...and bytes
	maxRotated   = 1000      // <label>.log.N looked for, N at most this
)

// logLine is a line of a log file and the time it is stamped with (that
// of the line before it where it has none).
type logLine struct {
	t    time.Time
	text string
}

// keepLast keeps the latest lines it is given, at most n of them and at
// most maxBytes of text; cutCount and cutBytes say which bound let lines
// go.
type keepLast struct {
	n, maxBytes        int
	lines              []logLine
	bytes              int
	cutCount, cutBytes bool
}

func (k *keepLast) add(l logLine) {
	k.lines = append(k.lines, l)
	k.bytes += len(l.text)
	if len(k.lines) > 2*k.n+64 || k.bytes > k.maxBytes+k.maxBytes/4 {
		k.trim()
	}
}

func (k *keepLast) trim() {
	i := 0
	for ; i < len(k.lines) && (len(k.lines)-i > k.n || k.bytes > k.maxBytes); i++ {
		if len(k.lines)-i > k.n {
			k.cutCount = true
		} else {
			k.cutBytes = true
		}
		k.bytes -= len(k.lines[i].text)
	}
	if i > 0 {
		k.lines = append([]logLine(nil), k.lines[i:]...)
	}
}

// scanLines hands each line of r to each, with its stamp; a last line
// without its newline too.
func scanLines(r io.Reader, each func(logLine)) {
	br := bufio.NewReaderSize(r, 64<<10)
	var prev time.Time
	var acc []byte
	for {
		b, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			if len(acc) > 0 {
				acc = append(acc, b...)
				b = acc
			}
			prev = emitLine(b[:len(b)-1], prev, each)
			acc = acc[:0]
		case errors.Is(err, bufio.ErrBufferFull):
			acc = append(acc, b...)
			if len(acc) >= maxLogLine {
				prev = emitLine(acc, prev, each)
				acc = acc[:0]
			}
		default: // the end, or a gzip file cut short: what it held
			if acc = append(acc, b...); len(acc) > 0 {
				emitLine(acc, prev, each)
			}
			return
		}
	}
}

// lineEnd returns the offset after the last newline in the first size
// bytes of f (0 if there is none): where the whole lines end.
func lineEnd(f *os.File, size int64) int64 {
	buf := make([]byte, 64<<10)
	for end := size; end > 0; {
		start := max(end-int64(len(buf)), 0)
		n, _ := f.ReadAt(buf[:end-start], start)
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			return start + int64(i) + 1
		}
		end = start
	}
	return 0
}

func emitLine(b []byte, prev time.Time, each func(logLine)) time.Time {
	s := string(b)
	if t, ok := logs.LineTime(s); ok {
		prev = t
	}
	each(logLine{t: prev, text: s})
	return prev
}

// openLog opens a log file to read. Anything but a regular file under
// the name (a FIFO, whose open would wait for a writer; a device) is
// refused without waiting.
func openLog(name string) (*os.File, error) {
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: not a regular file", name)
	}
	return f, nil
}

// logSource is one file of a service's log, open.
type logSource struct {
	f    *os.File
	gz   bool
	size int64 // what is read of it: its size when opened
}

// openLogs opens the current log file of label (nil if there is none)
// and then its rotated ones, newest first, each once.
func openLogs(dir, label string) (cur *os.File, rotated []logSource, err error) {
	var seen []os.FileInfo
	once := func(f *os.File) (os.FileInfo, bool) {
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			return nil, false
		}
		for _, s := range seen {
			if os.SameFile(s, fi) {
				return nil, false
			}
		}
		seen = append(seen, fi)
		return fi, true
	}
	base := logs.Path(dir, label)
	if f, err := openLog(base); err == nil {
		if _, ok := once(f); ok {
			cur = f
		} else {
			f.Close()
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("logs of %s: %w", label, err)
	}
	for n := 1; n <= maxRotated; n++ {
		name := base + "." + strconv.Itoa(n)
		f, err := openLog(name)
		gz := false
		if errors.Is(err, os.ErrNotExist) {
			f, err = openLog(name + ".gz")
			gz = true
		}
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			continue // unreadable: the rest may not be
		}
		fi, ok := once(f)
		if !ok {
			f.Close()
			continue
		}
		rotated = append(rotated, logSource{f: f, gz: gz, size: fi.Size()})
	}
	return cur, rotated, nil
}

// readSource hands the lines of a rotated file to each.
func readSource(src logSource, each func(logLine)) {
	var r io.Reader = io.NewSectionReader(src.f, 0, src.size)
	if src.gz {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return
		}
		defer zr.Close()
		r = zr
	}
	scanLines(r, each)
}

// initialLogs reads what logs sends of label before it follows: its last
// n lines stamped at or after since (zero: any), at most maxBytes of
// them, from the current file and as many rotated ones as that takes.
// It returns the current file (nil if none), open, and where a follow
// goes on in it (after the last whole line). cut says whether lines
// were left out for the bound of bytes (or of count when countCut).
func initialLogs(dir, label string, n int, since time.Time, maxBytes int, countCut bool) (lines []logLine, cur *os.File, off int64, cut bool, err error) {
	cur, rotated, err := openLogs(dir, label)
	if err != nil {
		return nil, nil, 0, false, err
	}
	defer func() {
		for _, r := range rotated {
			r.f.Close()
		}
	}()
	// Newest file first: each gives the lines still wanted, before those
	// of the files after it.
	var sources []func(func(logLine))
	if cur != nil {
		fi, err := cur.Stat()
		if err != nil {
			cur.Close()
			return nil, nil, 0, false, fmt.Errorf("logs of %s: %w", label, err)
		}
		off = lineEnd(cur, fi.Size())
		sources = append(sources, func(each func(logLine)) { scanLines(io.NewSectionReader(cur, 0, off), each) })
	}
	for _, r := range rotated {
		sources = append(sources, func(each func(logLine)) { readSource(r, each) })
	}
	for _, read := range sources {
		if n <= 0 || maxBytes <= 0 {
			break
		}
		k := keepLast{n: n, maxBytes: maxBytes}
		older := false // a line before since: the files before this hold no later one
		read(func(l logLine) {
			if l.t.Before(since) {
				older = true
				return
			}
			k.add(l)
		})
		k.trim()
		cut = cut || k.cutBytes || (countCut && k.cutCount)
		lines = append(k.lines, lines...)
		n -= len(k.lines)
		maxBytes -= k.bytes
		if older {
			break
		}
	}
	return lines, cur, off, cut, nil
}

// follower follows one service's log file as it grows.
type follower struct {
	label, path string
	f           *os.File // nil: there was no file yet
	off         int64
	buf         []byte
}

func (fw *follower) close() {
	if fw.f != nil {
		fw.f.Close()
		fw.f = nil
	}
}

// poll sends what was added to the file since the last poll, following
// the name to a new file when it was rotated.
func (fw *follower) poll(each func(string) error) error {
	now, statErr := os.Stat(fw.path)
	if fw.f == nil {
		if statErr != nil {
			return nil // not there (yet): the service has written nothing
		}
		return fw.reopen(each)
	}
	ours, err := fw.f.Stat()
	if err != nil {
		return fmt.Errorf("logs of %s: %w", fw.label, err)
	}
	if statErr == nil && !os.SameFile(now, ours) {
		// Rotated: the rest of the old file (written before the rename),
		// then the new one.
		if err := fw.read(each, -1); err != nil {
			return err
		}
		return fw.reopen(each)
	}
	if ours.Size() < fw.off {
		fw.off = 0 // truncated in place
	}
	return fw.read(each, logChunk)
}

func (fw *follower) reopen(each func(string) error) error {
	fw.close()
	f, err := openLog(fw.path)
	if err != nil {
		return nil // gone again (or not a file): the next poll looks
	}
	fw.f, fw.off = f, 0
	return fw.read(each, logChunk)
}

// read sends the whole lines after off, about limit bytes of them; with
// limit -1 everything to the end, a last line without its newline too
// (the file is done).
func (fw *follower) read(each func(string) error, limit int) error {
	if fw.buf == nil {
		fw.buf = make([]byte, 64<<10)
	}
	var acc []byte // a line longer than buf
	for done := 0; limit < 0 || done < limit; {
		n, err := fw.f.ReadAt(fw.buf, fw.off+int64(len(acc)))
		chunk := fw.buf[:n]
		for len(chunk) > 0 {
			i := bytes.IndexByte(chunk, '\n')
			if i < 0 {
				break
			}
			line := chunk[:i]
			if len(acc) > 0 {
				line = append(acc, line...)
				acc = acc[:0]
			}
			fw.off += int64(len(line)) + 1
			done += len(line) + 1
			chunk = chunk[i+1:]
			if err := each(string(line)); err != nil {
				return err
			}
		}
		acc = append(acc, chunk...)
		if len(acc) >= maxLogLine {
			fw.off += int64(len(acc))
			done += len(acc)
			if err := each(string(acc)); err != nil {
				return err
			}
			acc = acc[:0]
		}
		if err != nil || n == 0 {
			if limit < 0 && len(acc) > 0 {
				fw.off += int64(len(acc))
				return each(string(acc))
			}
			return nil
		}
	}
	return nil
}

// logBatcher gathers lines into reply pieces.
type logBatcher struct {
	out   *control.Stream
	lines []control.LogLine
	size  int
}

func (b *logBatcher) add(label, line string) error {
	b.lines = append(b.lines, control.LogLine{Label: label, Line: line})
	b.size += len(line) + len(label)
	if len(b.lines) >= logBatch || b.size >= logBatchSize {
		return b.flush()
	}
	return nil
}

func (b *logBatcher) flush() error {
	if len(b.lines) == 0 {
		return nil
	}
	err := b.out.Send(control.Reply{Logs: b.lines})
	b.lines, b.size = nil, 0
	return err
}

// mergeLogs interleaves the lines of several services by their stamps,
// keeping each one's own order, and keeps the latest n and maxBytes; it
// says whether the bound of bytes (or of count, with countCut) left
// lines out.
func mergeLogs(labels []string, per [][]logLine, n, maxBytes int, countCut bool) ([]control.LogLine, bool) {
	type item struct {
		label string
		l     logLine
	}
	var all []item
	heads := make([]int, len(per))
	for {
		best := -1
		for i, ls := range per {
			if heads[i] < len(ls) && (best < 0 || ls[heads[i]].t.Before(per[best][heads[best]].t)) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		all = append(all, item{labels[best], per[best][heads[best]]})
		heads[best]++
	}
	size := 0
	start := len(all)
	for start > 0 && len(all)-start < n && size+len(all[start-1].l.text) <= maxBytes {
		start--
		size += len(all[start].l.text)
	}
	cut := start > 0 && (len(all)-start < n || countCut)
	out := make([]control.LogLine, 0, len(all)-start)
	for _, it := range all[start:] {
		out = append(out, control.LogLine{Label: it.label, Line: it.l.text})
	}
	return out, cut
}

// streamLogs answers logs for labels (their files in dir): the initial
// lines, then with req.Follow the new ones until the client goes or
// stop is closed.
//
// With more (a follow of every service) it asks more every logNewEvery
// for the labels there are now, and follows the new ones too, from the
// first of their lines written since the follow began.
func streamLogs(dir string, labels []string, req control.Request, out *control.Stream, stop <-chan struct{}, more func() ([]string, error)) control.Reply {
	n := control.DefaultLogLines
	countCut := false // the count is not the caller's: say if it cut
	switch {
	case req.Lines != nil:
		n = *req.Lines
	case req.SinceUs > 0:
		n, countCut = maxLogLines, true
	}
	var since time.Time
	if req.SinceUs > 0 {
		since = time.UnixMicro(req.SinceUs)
	}
	fws := make([]*follower, len(labels))
	defer func() {
		for _, fw := range fws {
			if fw != nil {
				fw.close()
			}
		}
	}()
	per := make([][]logLine, len(labels))
	cut := false
	for i, l := range labels {
		lines, cur, off, c, err := initialLogs(dir, l, n, since, maxLogBytes, countCut)
		fws[i] = &follower{label: l, path: logs.Path(dir, l), f: cur, off: off}
		if err != nil && len(labels) == 1 {
			return control.Failure(err)
		}
		per[i], cut = lines, cut || c
	}
	first, c := mergeLogs(labels, per, n, maxLogBytes, countCut)
	per = nil
	if cut || c {
		note := fmt.Sprintf("only the latest lines are sent: at most %d lines and %d KiB", maxLogLines, maxLogBytes>>10)
		if err := out.Send(control.Reply{Message: note}); err != nil {
			return control.Failure(err)
		}
	}
	b := &logBatcher{out: out}
	for _, l := range first {
		if err := b.add(l.Label, l.Line); err != nil {
			return control.Failure(err)
		}
	}
	if err := b.flush(); err != nil || !req.Follow {
		if err != nil {
			return control.Failure(err)
		}
		return control.Reply{}
	}
	began := time.Now()
	known := map[string]bool{}
	for _, l := range labels {
		known[l] = true
	}
	asked := began
	tick := time.NewTimer(logPoll)
	defer tick.Stop()
	for {
		if more != nil && time.Since(asked) >= logNewEvery {
			asked = time.Now()
			now, err := more()
			if err != nil {
				return control.Failure(err)
			}
			for _, l := range now {
				if known[l] {
					continue
				}
				known[l] = true
				lines, cur, off, _, _ := initialLogs(dir, l, maxLogLines, began, maxLogBytes, true)
				fws = append(fws, &follower{label: l, path: logs.Path(dir, l), f: cur, off: off})
				for _, ln := range lines {
					if err := b.add(l, ln.text); err != nil {
						return control.Failure(err)
					}
				}
			}
		}
		for _, fw := range fws {
			if err := fw.poll(func(line string) error { return b.add(fw.label, line) }); err != nil {
				return control.Failure(err)
			}
		}
		if err := b.flush(); err != nil {
			return control.Failure(err)
		}
		tick.Reset(logPoll)
		select {
		case <-tick.C:
		case <-out.Gone():
			return control.Reply{}
		case <-stop:
			return control.Reply{Message: "rs stopped"}
		}
	}
}
