package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reincarnation/rs/internal/resp"
)

// wait bounds every wait in these tests; nothing here should come near it.
const wait = 10 * time.Second

var errFakeStopped = errors.New("fake: stopped")

// fakeService stands in for *sef.Service: a work queue, a stop switch,
// and counters for the channel faults.
type fakeService struct {
	work      chan any
	stop      chan struct{}
	garbage   atomic.Int32
	closechan atomic.Int32
}

func newFake() *fakeService {
	return &fakeService{work: make(chan any, 64), stop: make(chan struct{})}
}

func (f *fakeService) Post(ctx context.Context, w any) error {
	select {
	case f.work <- w:
		return nil
	case <-f.stop:
		return errFakeStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fakeService) Reached() {}

func (f *fakeService) Committed() <-chan struct{} { return committed }

var committed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (f *fakeService) Listen(network, addr string) (net.Listener, error) {
	return net.Listen(network, addr)
}

func (f *fakeService) Receive(ctx context.Context) (any, error) {
	select {
	case <-f.stop:
		return nil, errFakeStopped
	default:
	}
	select {
	case w := <-f.work:
		return w, nil
	case <-f.stop:
		return nil, errFakeStopped
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *fakeService) DebugGarbage() error      { f.garbage.Add(1); return nil }
func (f *fakeService) DebugCloseChannel() error { f.closechan.Add(1); return nil }

type testServer struct {
	srv      *server
	fake     *fakeService
	addr     string        // kv-style: host:port or unix:/path
	finished chan struct{} // closed when run has returned, err set
	err      error
}

// startServer runs a server on a fresh listener (network "tcp" or
// "unix"). Cleanup stops it and checks that it returned.
func startServer(t testing.TB, network string, allowFaults bool, hook func(*server)) *testServer {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = "unix:" + filepath.Join(t.TempDir(), "kv.sock")
	}
	fake := newFake()
	ln, err := listen(fake, addr)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{fake: fake, finished: make(chan struct{})}
	ts.addr = ln.Addr().String()
	if network == "unix" {
		ts.addr = "unix:" + ts.addr
	}
	ts.srv = newServer(ts.fake, ln, serverConfig{
		allowFaults: allowFaults,
		log:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		meta: meta{
			version: "test-1", label: "kv", initType: "fresh", pid: 4242,
			started: time.Unix(1000, 0),
			now:     func() time.Time { return time.Unix(1005, 0) },
		},
	})
	if hook != nil {
		hook(ts.srv)
	}
	go func() {
		ts.err = ts.srv.run()
		close(ts.finished)
	}()
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

// stop asks the main loop to end and waits for run to return.
func (ts *testServer) stop(t testing.TB) {
	t.Helper()
	select {
	case <-ts.fake.stop:
	default:
		close(ts.fake.stop)
	}
	ts.wait(t)
}

// wait waits for run to return and returns its error.
func (ts *testServer) wait(t testing.TB) error {
	t.Helper()
	select {
	case <-ts.finished:
		return ts.err
	case <-time.After(wait):
		t.Fatal("server did not stop")
		return nil
	}
}

func (ts *testServer) dial(t *testing.T) *resp.Client {
	t.Helper()
	c, err := resp.DialAddr(ts.addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(wait))
	return c
}

func do(t *testing.T, c *resp.Client, args ...string) resp.Value {
	t.Helper()
	v, err := c.Do(args...)
	if err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	return v
}

// manualTimer replaces time.AfterFunc so a test decides when a sleep
// ends.
type manualTimer struct {
	d       time.Duration
	fire    func()
	stopped atomic.Bool
}

func (m *manualTimer) Stop() bool { return !m.stopped.Swap(true) }

func manualTimers(timers chan *manualTimer) func(*server) {
	return func(srv *server) {
		srv.afterFunc = func(d time.Duration, f func()) stopper {
			m := &manualTimer{d: d, fire: f}
			timers <- m
			return m
		}
	}
}
