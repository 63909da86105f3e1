package main

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSplitAddr(t *testing.T) {
	tests := []struct{ in, network, addr string }{
		{"127.0.0.1:7070", "tcp", "127.0.0.1:7070"},
		{":7070", "tcp", ":7070"},
		{"unix:/run/kv.sock", "unix", "/run/kv.sock"},
		{"unix:rel.sock", "unix", "rel.sock"},
	}
	for _, tt := range tests {
		if n, a := splitAddr(tt.in); n != tt.network || a != tt.addr {
			t.Errorf("splitAddr(%q) = %q, %q; want %q, %q", tt.in, n, a, tt.network, tt.addr)
		}
	}
}

func TestListenUnixStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.sock")
	addr := "unix:" + path
	ln, err := listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	// A live server's path is not taken over.
	if _, err := listen(addr); !errors.Is(err, errInUse) {
		t.Fatalf("second listen on a live socket: %v, want errInUse", err)
	}
	// Closing keeps the path (it may live on in rs's fd store); the next
	// fresh start finds it stale and replaces it.
	ln.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("socket path gone after Close: %v", err)
	}
	ln, err = listen(addr)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	ln.Close()
}

func TestListenUnixNotASocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := listen("unix:" + path); !errors.Is(err, errInUse) {
		t.Fatalf("listen over a regular file: %v, want errInUse", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep me" {
		t.Fatalf("the file was touched: %q, %v", b, err)
	}
}

func TestListenEmpty(t *testing.T) {
	if _, err := listen("unix:"); err == nil {
		t.Fatal("listen on an empty path succeeded")
	}
}

// TestListenerFileRoundTrip does what a restart does: the socket goes to
// the fd store as a file and comes back as a listener that accepts the
// connections queued meanwhile.
func TestListenerFileRoundTrip(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "unix:" + filepath.Join(t.TempDir(), "kv.sock")} {
		ln, err := listen(addr)
		if err != nil {
			t.Fatal(err)
		}
		f, err := socketFile(ln)
		if err != nil {
			t.Fatal(err)
		}
		network := ln.Addr().Network()
		ln.Close() // the old instance dies; the stored copy keeps the socket

		// A client connects while no process listens.
		c, err := net.DialTimeout(network, ln.Addr().String(), wait)
		if err != nil {
			t.Fatalf("%s: dial with only the stored copy open: %v", addr, err)
		}
		c.Close()

		ln2, err := inheritListener(f)
		if err != nil {
			t.Fatal(err)
		}
		accepted := make(chan error, 1)
		go func() {
			c, err := ln2.Accept()
			if err == nil {
				c.Close()
			}
			accepted <- err
		}()
		select {
		case err := <-accepted:
			if err != nil {
				t.Fatalf("%s: accept on the inherited listener: %v", addr, err)
			}
		case <-time.After(wait):
			t.Fatalf("%s: the queued connection was not accepted", addr)
		}
		ln2.Close()
	}
}
