package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MaxConns bounds the HTTP connections open at once: any local user can
// connect, and each connection holds a goroutine and buffers.
const MaxConns = 16

// Server serves /metrics and /healthz of a Collector.
type Server struct {
	c   *Collector
	ln  net.Listener
	srv *http.Server
	end chan struct{} // closed when Serve's goroutine is done
}

// Listen binds addr (host:port; port 0 takes a free one) for c's
// metrics. Serve starts serving; Close ends it.
func Listen(addr string, c *Collector, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return On(ln, c, log), nil
}

// On is Listen on a listener already bound (one that crossed rs's exec
// in place, say); the Server owns ln.
func On(ln net.Listener, c *Collector, log *slog.Logger) *Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(c.Registry, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             c.timeout + time.Second,
	}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if _, err := c.Statuses(r.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "rs's loop is not answering:", err)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	s := &Server{
		c:  c,
		ln: &limitListener{Listener: ln, sem: make(chan struct{}, MaxConns)},
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      c.timeout + 10*time.Second,
			IdleTimeout:       30 * time.Second,
			MaxHeaderBytes:    8 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		},
		end: make(chan struct{}),
	}
	return s
}

// Collector is the Collector the server serves.
func (s *Server) Collector() *Collector { return s.c }

// FD is the listening socket's descriptor, for rs's exec in place (the
// Server still owns it); -1 if it has none.
func (s *Server) FD() int {
	fd := -1
	if sc, ok := s.ln.(*limitListener).Listener.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			rc.Control(func(u uintptr) { fd = int(u) })
		}
	}
	return fd
}

// Addr is the address bound.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves in a goroutine of its own until Close.
func (s *Server) Serve() {
	go func() {
		defer close(s.end)
		_ = s.srv.Serve(s.ln) // http.ErrServerClosed after Close
	}()
}

// Close ends the server: requests in flight get up to a second, then
// their connections are closed. It returns once Serve's goroutine is
// done, or a second later.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = s.srv.Close()
	}
	s.ln.Close()
	select {
	case <-s.end:
	case <-time.After(time.Second):
	}
	return err
}

// limitListener accepts at most cap(sem) connections open at once; the
// next waits in the kernel's backlog until one closes.
type limitListener struct {
	net.Listener
	sem chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
