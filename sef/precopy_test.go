package sef

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/msg"
)

// serve runs the main loop until the service stops, handing each work
// item to got.
func serve(s *Service, got chan<- any) <-chan error {
	done := make(chan error, 1)
	go func() {
		for {
			w, err := s.Receive(context.Background())
			if err != nil {
				done <- err
				return
			}
			got <- w
		}
	}()
	return done
}

// readBase reads a whole base stream from r: its payload, or an error.
func readBase(r io.Reader) ([]byte, error) {
	var h [len(baseMagic) + 1]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	if string(h[:len(baseMagic)]) != baseMagic || h[len(baseMagic)] != baseVersion {
		return nil, fmt.Errorf("header %q", h)
	}
	return io.ReadAll(&baseReader{r: r})
}

// frameBase frames payload as a base stream, in frames of at most n.
func frameBase(payload []byte, n int) []byte {
	b := append([]byte(baseMagic), baseVersion)
	total := uint64(len(payload))
	for len(payload) > 0 {
		k := min(n, len(payload))
		b = binary.BigEndian.AppendUint32(b, uint32(k))
		b = append(b, payload[:k]...)
		payload = payload[k:]
	}
	b = binary.BigEndian.AppendUint32(b, 0)
	return binary.BigEndian.AppendUint64(b, total)
}

func pipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// The old instance's side: the base streams in steps while work is
// served, then lu-base-done, LUStateChanged(0, N), and a save that
// knows it writes a delta.
func TestPreCopyStreamsTheBaseWhileServing(t *testing.T) {
	const steps = 50
	piece := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB a step
	var stepped, changedUp atomic.Int32
	var deltaSeen atomic.Bool
	s, f := startup(t, Callbacks{
		LUBaseStart: func(*Service, int) (BaseStep, error) {
			return func(w io.Writer) (bool, error) {
				n := stepped.Add(1)
				_, err := w.Write(piece)
				return n == steps, err
			}, nil
		},
		LUBaseLoad: func(*Service, io.Reader) error { return nil },
		LUStateChanged: func(_ *Service, old, _ int) {
			if old == 0 {
				if stepped.Load() != steps {
					t.Errorf("LUStateChanged(0, N) after %d of %d steps", stepped.Load(), steps)
				}
				changedUp.Add(1)
			}
		},
		LUStateSave: func(_ *Service, w *StateWriter) error {
			deltaSeen.Store(w.Delta())
			_, err := io.WriteString(w, "delta")
			return err
		},
	})
	if !f.hello.PreCopy {
		t.Fatalf("hello %+v: no pre-copy flag with both callbacks", f.hello)
	}
	got := make(chan any, 16)
	done := serve(s, got)
	r, w := pipe(t)
	f.send(&msg.Message{Kind: msg.KindLUPrepare, State: 1, MaxTime: int64(time.Second), Names: []string{msg.BaseFD}}, w)
	w.Close()
	base := make(chan []byte, 1)
	go func() {
		b, err := readBase(r)
		if err != nil {
			t.Errorf("base: %v", err)
		}
		base <- b
	}()
	// Work is served while the base streams.
	for i := range 3 {
		if err := s.Post(context.Background(), i); err != nil {
			t.Fatal(err)
		}
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			t.Fatal("work not served while the base streams")
		}
	}
	m, _ := f.recv()
	if m.Kind != msg.KindLUBaseDone || m.Base != uint64(steps*len(piece)) {
		t.Fatalf("after the base: %+v, want lu-base-done of %d bytes", m, steps*len(piece))
	}
	if b := <-base; !bytes.Equal(b, bytes.Repeat(piece, steps)) {
		t.Fatalf("base of %d bytes, want %d", len(b), steps*len(piece))
	}
	m, files := f.recv()
	if m.Kind != msg.KindLUReady || m.Err != "" || len(files) != 1 {
		t.Fatalf("lu-ready %+v with %d files", m, len(files))
	}
	st, _ := io.ReadAll(io.NewSectionReader(files[0], 0, 1<<20))
	files[0].Close()
	if string(st) != "delta" || !deltaSeen.Load() || changedUp.Load() != 1 {
		t.Fatalf("state %q, delta %v, LUStateChanged(0, N) %d times", st, deltaSeen.Load(), changedUp.Load())
	}
	f.send(&msg.Message{Kind: msg.KindStop})
	if err := <-done; !errors.Is(err, ErrStopped) {
		t.Fatal(err)
	}
}

// A cancel while the base streams (the new instance reads nothing, the
// pipe is full) ends it: the pipe closes, LUStateChanged(N, 0) tells the
// service, and work goes on.
func TestPreCopyCancelDuringTheBase(t *testing.T) {
	var ended atomic.Int32
	s, f := startup(t, Callbacks{
		LUBaseStart: func(*Service, int) (BaseStep, error) {
			return func(w io.Writer) (bool, error) {
				_, err := w.Write(make([]byte, 64<<10))
				return false, err // never done
			}, nil
		},
		LUBaseLoad: func(*Service, io.Reader) error { return nil },
		LUStateChanged: func(_ *Service, old, state int) {
			if state == 0 {
				ended.Add(1)
			}
		},
	})
	got := make(chan any, 16)
	done := serve(s, got)
	r, w := pipe(t)
	f.send(&msg.Message{Kind: msg.KindLUPrepare, State: 1, MaxTime: int64(time.Second), Names: []string{msg.BaseFD}}, w)
	w.Close()
	// The writer fills the pipe and the queue; the loop still serves.
	s.Post(context.Background(), "during")
	if w := <-got; w != "during" {
		t.Fatal(w)
	}
	f.send(&msg.Message{Kind: msg.KindLUCancel})
	// The stream ends, cut short (or before its header, if the cancel
	// came first): the old instance closed its end.
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := readBase(r); !errors.Is(err, errBaseShort) && !errors.Is(err, io.EOF) {
		t.Fatalf("base after the cancel: %v, want %v", err, errBaseShort)
	}
	s.Post(context.Background(), "after")
	if w := <-got; w != "after" {
		t.Fatal(w)
	}
	if ended.Load() != 1 {
		t.Fatalf("LUStateChanged(N, 0) %d times", ended.Load())
	}
	f.send(&msg.Message{Kind: msg.KindStop})
	<-done
}

// A service without LUBaseStart given a base pipe closes it (the new
// instance sees no base), says lu-base-done, and saves a whole state.
func TestPreCopyWithoutTheCallbacks(t *testing.T) {
	var delta atomic.Bool
	s, f := startup(t, Callbacks{
		LUStateSave: func(_ *Service, w *StateWriter) error {
			delta.Store(w.Delta())
			_, err := io.WriteString(w, "whole")
			return err
		},
	})
	if f.hello.PreCopy {
		t.Fatal("pre-copy flag in hello without the callbacks")
	}
	got := make(chan any, 1)
	done := serve(s, got)
	r, w := pipe(t)
	f.send(&msg.Message{Kind: msg.KindLUPrepare, State: 1, MaxTime: int64(time.Second), Names: []string{msg.BaseFD}}, w)
	w.Close()
	if m, _ := f.recv(); m.Kind != msg.KindLUBaseDone || m.Base != 0 {
		t.Fatalf("%+v, want lu-base-done of nothing", m)
	}
	m, files := f.recv()
	if m.Kind != msg.KindLUReady || m.Err != "" {
		t.Fatalf("%+v", m)
	}
	msg.CloseFiles(files)
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(r); err != nil || len(b) != 0 || delta.Load() {
		t.Fatalf("pipe: %q, %v; delta %v", b, err, delta.Load())
	}
	f.send(&msg.Message{Kind: msg.KindStop})
	<-done
}

// newInstance starts a Service as a live update's new instance: the
// base (bytes written to the pipe, then closed) comes with lu-base while
// it waits in hello, then the init with state. It returns the
// init-result.
func newInstance(t *testing.T, cb Callbacks, base []byte, state string) msg.Message {
	t.Helper()
	ours, theirs, err := msg.Pair()
	if err != nil {
		t.Fatal(err)
	}
	setChannelEnv(t, theirs)
	c, err := msg.NewConn(ours)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRS{t: t, c: c}
	t.Cleanup(func() { c.Close() })
	started := make(chan error, 1)
	go func() {
		_, err := Startup(context.Background(), cb)
		started <- err
	}()
	if m, _ := f.recv(); m.Kind != msg.KindHello || !m.PreCopy {
		t.Fatalf("hello %+v", m)
	}
	r, w := pipe(t)
	f.send(&msg.Message{Kind: msg.KindLUBase, Names: []string{msg.BaseFD}}, r)
	r.Close()
	go func() {
		w.Write(base) // the load may stop reading early on bad input
		w.Close()
	}()
	fd, err := unix.MemfdCreate("state", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	mem := os.NewFile(uintptr(fd), "state")
	defer mem.Close()
	io.WriteString(mem, state)
	f.send(&msg.Message{Kind: msg.KindInit, Version: msg.ProtocolVersion, InitType: msg.InitLiveUpdate, Label: "t",
		Names: []string{"lu:state"}}, mem)
	m, _ := f.recv()
	if m.Kind != msg.KindInitResult {
		t.Fatalf("%+v, want init-result", m)
	}
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("Startup did not return")
	}
	return m
}

// The new instance loads the base before its init, which then finds the
// delta; an empty stream is no base and a whole state.
func TestPreCopyLoadsTheBaseBeforeInit(t *testing.T) {
	payload := bytes.Repeat([]byte("base!"), 300000) // several frames
	for name, tc := range map[string]struct {
		stream    []byte
		wantBase  []byte
		wantDelta bool
	}{
		"base":    {frameBase(payload, 100000), payload, true},
		"no base": {nil, nil, false},
	} {
		t.Run(name, func(t *testing.T) {
			var loaded []byte
			var delta bool
			var st string
			res := newInstance(t, Callbacks{
				LUBaseStart: func(*Service, int) (BaseStep, error) { return nil, nil },
				LUBaseLoad: func(_ *Service, r io.Reader) (err error) {
					loaded, err = io.ReadAll(r)
					return err
				},
				InitLiveUpdate: func(_ *Service, in Init) error {
					delta = in.State.Delta
					b, err := io.ReadAll(in.State)
					st = string(b)
					return err
				},
			}, tc.stream, "the delta")
			if res.Err != "" {
				t.Fatalf("init failed: %s", res.Err)
			}
			if !bytes.Equal(loaded, tc.wantBase) || delta != tc.wantDelta || st != "the delta" {
				t.Fatalf("loaded %d bytes (want %d), delta %v (want %v), state %q",
					len(loaded), len(tc.wantBase), delta, tc.wantDelta, st)
			}
		})
	}
}

// What the old instance streams is hostile: every malformed stream fails
// the init with an error, never a panic or a hang.
func TestPreCopyHostileBase(t *testing.T) {
	good := frameBase([]byte("hello base"), 4)
	bigFrame := append([]byte(baseMagic), baseVersion)
	bigFrame = binary.BigEndian.AppendUint32(bigFrame, maxBaseFrame+1)
	wrongTotal := append([]byte(baseMagic), baseVersion)
	wrongTotal = binary.BigEndian.AppendUint32(wrongTotal, 3)
	wrongTotal = append(wrongTotal, "abc"...)
	wrongTotal = binary.BigEndian.AppendUint32(wrongTotal, 0)
	wrongTotal = binary.BigEndian.AppendUint64(wrongTotal, 99)
	for name, stream := range map[string][]byte{
		"bad magic":       append([]byte("notbase"), good[len(baseMagic):]...),
		"bad version":     append([]byte(baseMagic), append([]byte{9}, good[len(baseMagic)+1:]...)...),
		"half a header":   good[:4],
		"cut short":       good[:len(good)-5],
		"oversized frame": bigFrame,
		"wrong total":     wrongTotal,
		"trailing bytes":  append(append([]byte{}, good...), "more"...),
	} {
		t.Run(name, func(t *testing.T) {
			inited := false
			res := newInstance(t, Callbacks{
				LUBaseStart: func(*Service, int) (BaseStep, error) { return nil, nil },
				LUBaseLoad: func(_ *Service, r io.Reader) error {
					_, err := io.ReadAll(r)
					return err
				},
				InitLiveUpdate: func(*Service, Init) error { inited = true; return nil },
			}, stream, "")
			if !strings.Contains(res.Err, "pre-copy base") || inited {
				t.Fatalf("init-result %+v (init ran: %v), want a pre-copy base error", res, inited)
			}
		})
	}
}

// The new instance going away mid-stream (its read end closed) fails
// the update at once, not after the whole base: the old instance
// refuses and resumes.
func TestPreCopyReaderGoneMidStream(t *testing.T) {
	var ended atomic.Int32
	s, f := startup(t, Callbacks{
		LUBaseStart: func(*Service, int) (BaseStep, error) {
			return func(w io.Writer) (bool, error) {
				_, err := w.Write(make([]byte, 64<<10))
				return false, err // never done: only the failure ends it
			}, nil
		},
		LUBaseLoad: func(*Service, io.Reader) error { return nil },
		LUStateChanged: func(_ *Service, old, state int) {
			if state == 0 {
				ended.Add(1)
			}
		},
	})
	got := make(chan any, 16)
	done := serve(s, got)
	r, w := pipe(t)
	f.send(&msg.Message{Kind: msg.KindLUPrepare, State: 1, MaxTime: int64(time.Second), Names: []string{msg.BaseFD}}, w)
	w.Close()
	io.ReadFull(r, make([]byte, 100<<10)) // some of it, then gone
	r.Close()
	m, _ := f.recv()
	if m.Kind != msg.KindLUReady || !strings.Contains(m.Err, "closed the stream") {
		t.Fatalf("%+v, want lu-ready refusing over the closed stream", m)
	}
	s.Post(context.Background(), "after")
	if w := <-got; w != "after" || ended.Load() != 1 {
		t.Fatalf("after the failure: work %v, LUStateChanged(N, 0) %d times", w, ended.Load())
	}
	f.send(&msg.Message{Kind: msg.KindStop})
	<-done
}

// Frames are filled to baseFrame and never past their capacity, so the
// writer can hand every one back for reuse: a step's writes of any size
// neither grow a frame nor allocate a new one once the spares go round.
func TestBaseFramesKeepTheirSize(t *testing.T) {
	b := &baseSend{free: make(chan []byte, baseQueue/baseFrame+2)}
	b.cond = sync.NewCond(&b.mu)
	b.cur = b.frame()
	chunk := bytes.Repeat([]byte{'x'}, 33<<10+7) // about one kv step, not a divisor of a frame
	var payload int
	check := func() {
		t.Helper()
		b.mu.Lock()
		q := b.queue
		b.queue, b.queued = nil, 0
		b.mu.Unlock()
		for _, f := range q {
			if cap(f) != baseFrame+4 {
				t.Fatalf("a frame of capacity %d, want %d: it grew", cap(f), baseFrame+4)
			}
			n := int(binary.BigEndian.Uint32(f))
			if n != len(f)-4 || n > baseFrame {
				t.Fatalf("a frame says %d bytes and holds %d (at most %d)", n, len(f)-4, baseFrame)
			}
			payload += n
			b.free <- f // as the writer does once it is in the pipe
		}
	}
	for range 100 {
		b.Write(chunk)
		check()
	}
	allocs := testing.AllocsPerRun(100, func() {
		b.Write(chunk)
		check()
	})
	if allocs > 0.5 {
		t.Errorf("%.1f allocations per step with frames going round, want none", allocs)
	}
	b.flushFrame()
	check()
	if want := 201 * len(chunk); payload != want {
		t.Errorf("%d payload bytes framed, want %d", payload, want)
	}
}

// gcPercent reads the GC percent without setting it.
func gcPercent() uint64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// The base loads with the GC percent raised, and the init's end puts it
// back; a service's own setting of off or higher is left alone, and so
// is one it changes during the load. Each case starts from a collection:
// a heap that earlier tests grew past half the way to the goal would put
// the percent back only after the next one (the test below).
func TestPreCopyLoadGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	base := frameBase([]byte("some base"), 4)
	for _, tc := range []struct {
		name            string
		before          int
		during, after   uint64
		setDuringLoadTo int
	}{
		{"default", 100, loadGCPercent, 100, 0},
		{"higher", 800, 800, 800, 0},
		{"off", -1, math.MaxUint64, math.MaxUint64, 0},
		{"changed by the service", 100, 50, 50, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetGCPercent(tc.before)
			runtime.GC()
			var during uint64
			res := newInstance(t, Callbacks{
				LUBaseStart: func(*Service, int) (BaseStep, error) { return nil, nil },
				LUBaseLoad: func(_ *Service, r io.Reader) error {
					if tc.setDuringLoadTo != 0 {
						debug.SetGCPercent(tc.setDuringLoadTo)
					}
					during = gcPercent()
					_, err := io.ReadAll(r)
					return err
				},
				InitLiveUpdate: func(*Service, Init) error { return nil },
			}, base, "")
			if res.Err != "" {
				t.Fatalf("init failed: %s", res.Err)
			}
			if after := gcPercent(); during != tc.during || after != tc.after {
				t.Errorf("GC percent %d during the load (want %d), %d after the init (want %d)", during, tc.during, after, tc.after)
			}
		})
	}
}

// After the init, a heap that grew past half the way to the goal the old
// GC percent gives keeps the load's percent until the next collection:
// put back at once, it would start one as the new instance begins to
// serve. A heap well below that goal gets the old percent back at once.
func TestPreCopyGCRestoreWaitsForACollection(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	for _, grown := range []bool{false, true} {
		t.Run(fmt.Sprintf("grown=%v", grown), func(t *testing.T) {
			// No collection while the heap is set up, then the load's
			// percent, whose goal is far above the heap (see below).
			debug.SetGCPercent(-1)
			runtime.GC()
			var sink []byte
			if grown {
				// The heap is now 2 live + 4 MiB: past the half-way point
				// at 100 (at most 1.5 live + 2 MiB), below the earliest
				// trigger at 400 (3.8 live, and 11 MiB).
				s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
				metrics.Read(s)
				sink = make([]byte, s[0].Value.Uint64()+4<<20)
			}
			debug.SetGCPercent(loadGCPercent)
			p := &preload{gcPercent: 100}
			p.restoreGC()
			if got := gcPercent(); grown && got != loadGCPercent || !grown && got != 100 {
				t.Fatalf("GC percent %d right after the restore", got)
			}
			if grown {
				runtime.GC()
				runtime.KeepAlive(sink)
			}
			select {
			case <-p.restored:
			case <-time.After(10 * time.Second):
				t.Fatal("the GC percent was not put back after a collection")
			}
			if got := gcPercent(); got != 100 {
				t.Fatalf("GC percent %d after the next collection, want 100", got)
			}
		})
	}
}
