package main

import (
	"errors"
	"io"
	"net"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reincarnation/rs/internal/resp"
)

func TestServerCommands(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			c := startServer(t, network, false, nil).dial(t)
			steps := []struct {
				args []string
				want resp.Value
			}{
				{[]string{"PING"}, resp.Simple("PONG")},
				{[]string{"ping", "hi"}, resp.Bulk("hi")},
				{[]string{"SET", "k", "v\r\n"}, resp.Simple("OK")},
				{[]string{"GET", "k"}, resp.Bulk("v\r\n")},
				{[]string{"NOSUCH", "x"}, resp.Error("ERR unknown command 'NOSUCH'")},
				{[]string{"GET", "k"}, resp.Bulk("v\r\n")}, // still usable
				{[]string{"CONFIG", "GET", "save"}, resp.Array()},
				{[]string{"DBSIZE"}, resp.Int(1)},
				{[]string{"DEBUG", "FAULT", "panic"}, resp.Error("ERR DEBUG FAULT is disabled; start kv with --allow-faults")},
				{[]string{"DEBUG", "SLEEP", "0.01"}, resp.Simple("OK")},
			}
			for _, s := range steps {
				if got := do(t, c, s.args...); !reflect.DeepEqual(got, s.want) {
					t.Fatalf("%q = %v, want %v", s.args, got, s.want)
				}
			}
			info := do(t, c, "INFO")
			for _, line := range []string{"version:test-1\r\n", "process_id:4242\r\n", "uptime_in_seconds:5\r\n", "connected_clients:1\r\n"} {
				if !strings.Contains(info.Str, line) {
					t.Errorf("INFO lacks %q:\n%s", line, info.Str)
				}
			}
		})
	}
}

func TestServerInline(t *testing.T) {
	c := startServer(t, "tcp", false, nil).dial(t)
	c.WriteRaw([]byte("SET k \"a b\"\r\nGET k\nPING\r\n"))
	c.Flush()
	for _, want := range []resp.Value{resp.Simple("OK"), resp.Bulk("a b"), resp.Simple("PONG")} {
		if got, err := c.Read(); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("got %v, %v; want %v", got, err, want)
		}
	}
}

func TestServerPipelineOrder(t *testing.T) {
	// More requests than one batch holds, in one write: every reply
	// arrives, in order.
	c := startServer(t, "tcp", false, nil).dial(t)
	const n = 3*maxBatch + 7
	for range n {
		c.Send("INCR", "counter")
	}
	c.Flush()
	for i := range n {
		v, err := c.Read()
		if err != nil || v.Kind != resp.KindInt || v.Int != int64(i+1) {
			t.Fatalf("reply %d = %v, %v; want %d", i, v, err, i+1)
		}
	}
}

func TestServerLargeValue(t *testing.T) {
	// Larger than the read buffer: the connection grows it, and shrinks
	// it again for the next request.
	c := startServer(t, "tcp", false, nil).dial(t)
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	if got := do(t, c, "SET", "big", big); got.Str != "OK" {
		t.Fatalf("SET big = %v", got)
	}
	if got := do(t, c, "GET", "big"); got.Str != big {
		t.Fatalf("GET big returned %d bytes, want %d", len(got.Str), len(big))
	}
	if got := do(t, c, "PING"); got.Str != "PONG" {
		t.Fatalf("PING after a large value = %v", got)
	}
}

func TestServerMalformedCloses(t *testing.T) {
	ts := startServer(t, "tcp", false, nil)
	c := ts.dial(t)
	// The good request before the bad frame is still served.
	c.WriteRaw([]byte("PING\r\n*1\r\n$-5\r\n"))
	c.Flush()
	if v, err := c.Read(); err != nil || v.Str != "PONG" {
		t.Fatalf("first reply = %v, %v", v, err)
	}
	v, err := c.Read()
	if err != nil || v.Err != "ERR Protocol error: invalid bulk length" {
		t.Fatalf("reply to a bad frame = %v, %v", v, err)
	}
	if v, err := c.Read(); err != io.EOF {
		t.Fatalf("after a protocol error: %v, %v; want the connection closed", v, err)
	}
	// The server itself goes on.
	if got := do(t, ts.dial(t), "PING"); got.Str != "PONG" {
		t.Fatalf("PING on a new connection = %v", got)
	}
}

func TestServerSleepDoesNotBlock(t *testing.T) {
	timers := make(chan *manualTimer, 1)
	ts := startServer(t, "tcp", false, manualTimers(timers))
	sleeper := ts.dial(t)
	// A sleep, then a command behind it in the same pipeline.
	sleeper.Send("DEBUG", "SLEEP", "1.5")
	sleeper.Send("SET", "after", "sleep")
	sleeper.Flush()
	var tm *manualTimer
	select {
	case tm = <-timers:
	case <-time.After(wait):
		t.Fatal("no timer armed")
	}
	if tm.d != 1500*time.Millisecond {
		t.Fatalf("timer for %v, want 1.5s", tm.d)
	}

	// Meanwhile another client is served, which it could not be if the
	// main loop slept; the key set behind the sleep is not there yet.
	other := ts.dial(t)
	if got := do(t, other, "GET", "after"); !got.Null {
		t.Fatalf("GET while the other client sleeps = %v, want nil", got)
	}
	tm.fire()
	for _, want := range []string{"OK", "OK"} {
		if v, err := sleeper.Read(); err != nil || v.Str != want {
			t.Fatalf("sleeper got %v, %v; want %s", v, err, want)
		}
	}
	if got := do(t, other, "GET", "after"); got.Str != "sleep" {
		t.Fatalf("GET after the sleep = %v", got)
	}
}

func TestServerStopDuringSleep(t *testing.T) {
	timers := make(chan *manualTimer, 1)
	ts := startServer(t, "tcp", false, manualTimers(timers))
	c := ts.dial(t)
	c.Send("DEBUG", "SLEEP", "3600")
	c.Flush()
	var tm *manualTimer
	select {
	case tm = <-timers:
	case <-time.After(wait):
		t.Fatal("no timer armed")
	}
	ts.stop(t)
	if !tm.stopped.Load() {
		t.Error("the sleep's timer was not stopped at shutdown")
	}
	if v, err := c.Read(); err == nil {
		t.Fatalf("read after stop = %v, want the connection closed", v)
	}
	if _, err := resp.DialAddr(ts.addr, time.Second); err == nil {
		t.Fatal("dial after stop succeeded; the listener should be closed")
	}
}

func TestServerFaults(t *testing.T) {
	tests := []struct {
		kind            string
		garbage, closed int32
	}{
		{"garbage", 1, 0},
		{"closechan", 0, 1},
		{"hang", 0, 0}, // the hook below stands in for the fatal kinds
		{"PANIC", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			gotOK := make(chan struct{})
			committed := make(chan string, 1)
			ts := startServer(t, "tcp", true, func(srv *server) {
				srv.commit = func(kind string) {
					// The client must hold +OK before the fault strikes;
					// if the server had not written it, this would time out.
					select {
					case <-gotOK:
					case <-time.After(wait):
						t.Errorf("fault %s committed before +OK reached the client", kind)
					}
					committed <- kind
					if kind == "garbage" || kind == "closechan" {
						srv.commitFault(kind)
					}
				}
			})
			c := ts.dial(t)
			c.Send("SET", "a", "1")
			c.Send("DEBUG", "FAULT", tt.kind)
			c.Send("GET", "a") // runs after a fault that returns
			c.Flush()
			for _, want := range []string{"OK", "OK"} {
				if v, err := c.Read(); err != nil || v.Str != want {
					t.Fatalf("got %v, %v; want %s", v, err, want)
				}
			}
			close(gotOK)
			select {
			case k := <-committed:
				if k != strings.ToLower(tt.kind) {
					t.Fatalf("committed %q, want %q", k, tt.kind)
				}
			case <-time.After(wait):
				t.Fatal("fault not committed")
			}
			if v, err := c.Read(); err != nil || v.Str != "1" {
				t.Fatalf("GET after the fault = %v, %v", v, err)
			}
			if g, cl := ts.fake.garbage.Load(), ts.fake.closechan.Load(); g != tt.garbage || cl != tt.closed {
				t.Fatalf("garbage %d, closechan %d; want %d, %d", g, cl, tt.garbage, tt.closed)
			}
		})
	}
}

func TestServerManyClients(t *testing.T) {
	ts := startServer(t, "tcp", false, nil)
	const clients, each = 8, 200
	errs := make(chan error, clients)
	for i := range clients {
		go func() {
			c, err := resp.DialAddr(ts.addr, wait)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(wait))
			key := "k" + strconv.Itoa(i)
			for j := range each {
				v, err := c.Do("INCR", key)
				if err == nil && v.Int != int64(j+1) {
					err = errors.New(key + ": got " + v.String())
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range clients {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(wait):
			t.Fatal("clients did not finish")
		}
	}
	if got := do(t, ts.dial(t), "DBSIZE"); got.Int != clients {
		t.Fatalf("DBSIZE = %v, want %d", got, clients)
	}
}

func TestServerListenerFailure(t *testing.T) {
	// A listener that breaks under the server (not at shutdown) ends run
	// with an error, so main exits non-zero and rs restarts kv.
	ts := startServer(t, "tcp", false, nil)
	ts.srv.ln.Close()
	if err := ts.wait(t); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("run = %v, want the accept error", err)
	}
}

func TestServerGoroutinesEnd(t *testing.T) {
	ts := startServer(t, "tcp", false, nil)
	for range 3 {
		do(t, ts.dial(t), "PING")
	}
	ts.stop(t)
	if !errors.Is(ts.err, errFakeStopped) {
		t.Fatalf("run = %v, want the stop error", ts.err)
	}
	// run waited for its goroutines; wg must be at zero now.
	done := make(chan struct{})
	go func() {
		ts.srv.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("connection goroutines outlived run")
	}
}

// BenchmarkServerPipeline measures the whole path (parse, batch, main
// loop, reply) over loopback TCP, 64 commands per round trip.
func BenchmarkServerPipeline(b *testing.B) {
	ts := startServer(b, "tcp", false, nil)
	c, err := resp.DialAddr(ts.addr, wait)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	const depth = 64
	b.ReportAllocs()
	for b.Loop() {
		for range depth / 2 {
			c.Send("SET", "key", "value")
			c.Send("GET", "key")
		}
		if err := c.Flush(); err != nil {
			b.Fatal(err)
		}
		for range depth {
			if _, err := c.Read(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*depth)/b.Elapsed().Seconds(), "cmds/s")
}
