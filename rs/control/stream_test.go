package control

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// A logs request carries its fields across; bad counts and times are
// refused; reopen-logs needs no label.
func TestLogsRequestDecoding(t *testing.T) {
	enc := func(v any) []byte { b, _ := msgpack.Marshal(v); return b }
	zero, five := 0, 5
	for _, want := range []Request{
		{Op: OpLogs},
		{Op: OpLogs, Label: "kv", Lines: &zero, Follow: true},
		{Op: OpLogs, Label: "kv", Lines: &five, SinceUs: 1764646200123456},
		{Op: OpReopenLogs},
	} {
		got, err := DecodeRequest(enc(&want))
		if err != nil {
			t.Fatalf("%+v: %v", want, err)
		}
		if got.Op != want.Op || got.Label != want.Label || got.Follow != want.Follow || got.SinceUs != want.SinceUs ||
			(got.Lines == nil) != (want.Lines == nil) || (got.Lines != nil && *got.Lines != *want.Lines) {
			t.Errorf("sent %+v, decoded %+v", want, got)
		}
	}
	for name, fields := range map[string]map[string]any{
		"lines -1":        {"op": OpLogs, "lines": -1},
		"lines too many":  {"op": OpLogs, "lines": MaxLogLines + 1},
		"lines 2^63":      {"op": OpLogs, "lines": uint64(1 << 63)},
		"since -1":        {"op": OpLogs, "since_us": -1},
		"lines a string":  {"op": OpLogs, "lines": "ten"},
		"follow a number": {"op": OpLogs, "follow": 7},
	} {
		if r, err := DecodeRequest(enc(fields)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: decoded as %+v, %v; want ErrInvalid", name, r, err)
		}
	}
}

// A follow stream: the client gets each line as the handler sends it,
// with no overall timeout; when the client goes, the handler is told
// (Gone) and the connection's goroutines end.
func TestStreamFollow(t *testing.T) {
	next := make(chan string)
	ended := make(chan struct{})
	srv := &Server{Handler: func(Request, Peer, func(string)) Reply { return Reply{} },
		Stream: func(req Request, _ Peer, out *Stream) Reply {
			defer close(ended)
			for {
				select {
				case l := <-next:
					if err := out.Send(Reply{Logs: []LogLine{{Label: req.Label, Line: l}}, Done: true}); err != nil {
						return Failure(err)
					}
				case <-out.Gone():
					return Reply{}
				}
			}
		}}
	c := serveWith(t, srv)
	c.Timeout = 0 // logs -f: none
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan LogLine)
	res := make(chan error, 1)
	go func() {
		_, err := c.Stream(ctx, Request{Op: OpLogs, Label: "kv", Follow: true}, func(r Reply) error {
			if r.Done {
				t.Error("a piece marked done")
			}
			for _, l := range r.Logs {
				got <- l
			}
			return nil
		})
		res <- err
	}()
	for _, line := range []string{"2026-12-02T03:45:01.000001Z out one", "2026-12-02T03:45:02.000002Z err two"} {
		select {
		case next <- line:
		case <-time.After(20 * time.Second):
			t.Fatal("the handler did not run")
		}
		select {
		case l := <-got:
			if l.Label != "kv" || l.Line != line {
				t.Fatalf("got %+v, want %q", l, line)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("line %q did not come", line)
		}
	}
	cancel()
	select {
	case err := <-res:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Stream returned %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Stream did not return after its context ended")
	}
	select {
	case <-ended:
	case <-time.After(20 * time.Second):
		t.Fatal("the handler was not told that the client went")
	}
	waitGoroutines(t, before)
}

// A finite stream: every piece, then the final reply, which ends Stream.
func TestStreamFinite(t *testing.T) {
	c := serveWith(t, &Server{Stream: func(req Request, _ Peer, out *Stream) Reply {
		for i := range 3 {
			out.Send(Reply{Logs: []LogLine{{Label: "a", Line: string(rune('x' + i))}}})
		}
		return Reply{Message: "end"}
	}})
	var lines []string
	r, err := c.Stream(context.Background(), Request{Op: OpLogs}, func(r Reply) error {
		for _, l := range r.Logs {
			lines = append(lines, l.Line)
		}
		return nil
	})
	if err != nil || r.Message != "end" || len(lines) != 3 || lines[0] != "x" || lines[2] != "z" {
		t.Fatalf("reply %+v, %v; lines %q", r, err, lines)
	}
	// A server without a stream handler refuses the op.
	c = serveWith(t, &Server{Handler: func(Request, Peer, func(string)) Reply { return Reply{} }})
	if _, err := c.Stream(context.Background(), Request{Op: OpLogs}, func(Reply) error { return nil }); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no stream handler: %v, want ErrInvalid", err)
	}
}

// A follow that stays quiet far longer than the client's silence bound
// lives on keepalives.
func TestStreamQuietFollow(t *testing.T) {
	c := serveWith(t, &Server{Keepalive: 10 * time.Millisecond, Stream: func(req Request, _ Peer, out *Stream) Reply {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for range 250 { // 2.5s of nothing: more than twice the silence bound
			select {
			case <-tick.C:
			case <-out.Gone():
				return Reply{}
			}
		}
		out.Send(Reply{Logs: []LogLine{{Label: "kv", Line: "late"}}})
		return Reply{}
	}})
	c.Timeout, c.Silence = 0, time.Second
	var lines []string
	_, err := c.Stream(context.Background(), Request{Op: OpLogs, Follow: true}, func(r Reply) error {
		lines = append(lines, r.Logs[0].Line)
		return nil
	})
	if err != nil || len(lines) != 1 {
		t.Fatalf("%v; lines %q", err, lines)
	}
}

// waitGoroutines waits, bounded, for the goroutine count to come back to
// at most n.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Streams take at most MaxStreams connections: one more is refused as
// busy, a plain request is still answered beside them, and an ended
// stream frees its place.
func TestStreamLimit(t *testing.T) {
	srv := &Server{MaxConns: 8, MaxStreams: 2,
		Handler: func(Request, Peer, func(string)) Reply { return Reply{Message: "ok"} },
		Stream: func(req Request, _ Peer, out *Stream) Reply {
			if err := out.Send(Reply{Logs: []LogLine{{Label: req.Label, Line: "open"}}}); err != nil {
				return Failure(err)
			}
			<-out.Gone()
			return Reply{}
		}}
	c := serveWith(t, srv)
	c.Timeout = 0
	open := func() (context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		first, res := make(chan struct{}), make(chan error, 1)
		go func() {
			once := false
			_, err := c.Stream(ctx, Request{Op: OpEvents, Follow: true}, func(Reply) error {
				if !once {
					once = true
					close(first)
				}
				return nil
			})
			res <- err
		}()
		select {
		case <-first:
		case err := <-res:
			res <- err
		case <-time.After(10 * time.Second):
			t.Fatal("the stream did not open")
		}
		return cancel, res
	}
	cancel1, res1 := open()
	cancel2, _ := open()
	defer cancel2()
	ctx, cancel3 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel3()
	if _, err := c.Stream(ctx, Request{Op: OpEvents, Follow: true}, func(Reply) error { return nil }); !errors.Is(err, ErrBusy) {
		t.Fatalf("a third stream: %v, want ErrBusy", err)
	}
	if r, err := c.Do(Request{Op: OpStatus}, nil); err != nil || r.Message != "ok" {
		t.Fatalf("status beside two streams: %+v, %v", r, err)
	}
	cancel1()
	select {
	case <-res1:
	case <-time.After(10 * time.Second):
		t.Fatal("the first stream did not end")
	}
	// Its place is free once its goroutine has counted it out.
	deadline := time.Now().Add(10 * time.Second)
	for {
		cancelN, resN := open()
		select {
		case err := <-resN:
			cancelN()
			if !errors.Is(err, ErrBusy) || time.Now().After(deadline) {
				t.Fatalf("a stream after one ended: %v", err)
			}
			continue // the first one's end is still being counted
		default:
		}
		cancelN()
		break
	}
}
