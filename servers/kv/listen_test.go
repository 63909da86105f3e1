package main

import "testing"

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

func TestListenEmpty(t *testing.T) {
	if _, err := listen(nil, "unix:"); err == nil {
		t.Fatal("listen on an empty path succeeded")
	}
}
