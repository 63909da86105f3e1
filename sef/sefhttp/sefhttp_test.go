package sefhttp_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reincarnation/rs/sef"
	"github.com/reincarnation/rs/sef/sefhttp"
	"github.com/reincarnation/rs/sef/seftest"
)

// counter is an instance of the counting service, run under a fake rs.
type counter struct {
	rs   *seftest.RS
	addr string
	done chan error // Run's result
}

func startCounter(t *testing.T, ctx context.Context, in seftest.Init) *counter {
	t.Helper()
	rs, opt, err := seftest.Fake(in)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	var count atomic.Uint64
	addrs := make(chan net.Addr, 1)
	srv := &sefhttp.Server{
		Addr: "127.0.0.1:0",
		HTTP: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprint(w, count.Add(1))
		})},
		Save: func(w io.Writer) error {
			_, err := fmt.Fprint(w, count.Load())
			return err
		},
		Restore: func(r io.Reader) error {
			var n uint64
			_, err := fmt.Fscan(r, &n)
			count.Store(n)
			return err
		},
		Logger:   slog.New(slog.DiscardHandler),
		OnListen: func(a net.Addr) { addrs <- a },
		Options:  []sef.Option{opt},
	}
	c := &counter{rs: rs, done: make(chan error, 1)}
	go func() { c.done <- srv.Run(ctx) }()
	if err := rs.Started(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-addrs:
		c.addr = a.String()
	case err := <-c.done:
		t.Fatalf("Run: %v", err)
	case <-ctx.Done():
		t.Fatal("not serving")
	}
	return c
}

// get fetches one count and says whether it came on a reused connection.
func get(t *testing.T, ctx context.Context, client *http.Client, addr string) (string, bool) {
	t.Helper()
	var reused bool
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), "GET", "http://"+addr+"/", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET: %d %q %v", resp.StatusCode, b, err)
	}
	return strings.TrimSpace(string(b)), reused
}

// An update moves the counter and the idle keep-alive connection (same
// socket, not closed) to the new instance; a rollback first resumes the
// old one; the old one's Run returns nil at the commit.
func TestUpdateKeepsCountAndConnection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	old := startCounter(t, ctx, seftest.Init{})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	if n, _ := get(t, ctx, client, old.addr); n != "1" {
		t.Fatalf("first count %q", n)
	}

	saved, err := old.rs.Prepare(ctx, sef.StateWorkFree)
	if err != nil {
		t.Fatal(err)
	}
	saved.Close()
	old.rs.Cancel() // rollback
	if n, reused := get(t, ctx, client, old.addr); n != "2" || !reused {
		t.Fatalf("after a rollback: count %q, connection reused %v", n, reused)
	}

	saved, err = old.rs.Prepare(ctx, sef.StateWorkFree)
	if err != nil {
		t.Fatal(err)
	}
	defer saved.Close()
	if len(saved.FDs) != 1 {
		t.Fatalf("%d connections handed over, want the one idle", len(saved.FDs))
	}
	stored, err := old.rs.Stored()
	if err != nil {
		t.Fatal(err)
	}
	next := startCounter(t, ctx, seftest.Init{Type: sef.InitLiveUpdate, State: saved, FDs: stored})
	for _, f := range stored {
		f.Close()
	}
	old.rs.Stop() // the commit
	if err := <-old.done; err != nil {
		t.Fatalf("old instance's Run: %v", err)
	}
	if next.addr != old.addr {
		t.Fatalf("new instance on %s, old on %s", next.addr, old.addr)
	}
	if n, reused := get(t, ctx, client, next.addr); n != "3" || !reused {
		t.Fatalf("after the update: count %q, connection reused %v", n, reused)
	}
	fresh := &http.Client{Transport: &http.Transport{}} // a new connection: the new instance accepts it
	defer fresh.CloseIdleConnections()
	if n, _ := get(t, ctx, fresh, next.addr); n != "4" {
		t.Fatalf("new connection: count %q", n)
	}
	next.rs.Stop()
	if err := <-next.done; err != nil {
		t.Fatal(err)
	}
}

// A group update's new instance holds until the commit: a request on
// the handed-over keep-alive connection, and one on a new connection,
// wait (unanswered, their bytes in the kernel) while it is held, and are
// answered by it once committed, the count carried over.
func TestHeldUntilCommit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	old := startCounter(t, ctx, seftest.Init{})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	if n, _ := get(t, ctx, client, old.addr); n != "1" {
		t.Fatalf("first count %q", n)
	}
	saved, err := old.rs.Prepare(ctx, sef.StateWorkFree)
	if err != nil {
		t.Fatal(err)
	}
	defer saved.Close()
	stored, err := old.rs.Stored()
	if err != nil {
		t.Fatal(err)
	}
	next := startCounter(t, ctx, seftest.Init{Type: sef.InitLiveUpdate, State: saved, FDs: stored, Hold: true})
	for _, f := range stored {
		f.Close()
	}
	if !next.rs.Held() {
		t.Fatal("the new instance does not hold")
	}
	answers := make(chan string, 2)
	fresh := &http.Client{Transport: &http.Transport{}}
	defer fresh.CloseIdleConnections()
	for _, c := range []*http.Client{client, fresh} {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+next.addr+"/", nil)
			resp, err := c.Do(req)
			if err != nil {
				answers <- err.Error()
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			answers <- strings.TrimSpace(string(b))
		}()
	}
	for range 5 {
		if err := next.rs.Ping(ctx); err != nil {
			t.Fatalf("ping while held: %v", err)
		}
	}
	select {
	case a := <-answers:
		t.Fatalf("answered %q while held", a)
	default:
	}
	old.rs.Stop() // the commit: the old one stops, the new one is released
	next.rs.Commit()
	got := map[string]bool{<-answers: true, <-answers: true}
	if !got["2"] || !got["3"] {
		t.Fatalf("after the commit: %v, want counts 2 and 3", got)
	}
	if err := <-old.done; err != nil {
		t.Fatalf("old instance's Run: %v", err)
	}
	next.rs.Stop()
	if err := <-next.done; err != nil {
		t.Fatal(err)
	}
}
