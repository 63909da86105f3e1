package control

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestDefaultSocketPath(t *testing.T) {
	uid := os.Getuid()
	cases := []struct {
		sock, xdg, tmp string
		dir, want      string
	}{
		{"/x/rs.sock", "/run/user/1", "", "/run/user/1/rs", "/x/rs.sock"},
		{"", "/run/user/1", "", "/run/user/1/rs", "/run/user/1/rs/rs.sock"},
		{"", "", "/var/tmp", fmt.Sprintf("/var/tmp/rs-%d", uid), fmt.Sprintf("/var/tmp/rs-%d/rs.sock", uid)},
	}
	if uid == 0 {
		cases[2].dir, cases[2].want = "/run/rs", "/run/rs/rs.sock"
	}
	for _, c := range cases {
		t.Setenv("RS_SOCKET", c.sock)
		t.Setenv("XDG_RUNTIME_DIR", c.xdg)
		t.Setenv("TMPDIR", c.tmp)
		if d, s := RuntimeDir(), DefaultSocket(); d != c.dir || s != c.want {
			t.Errorf("RS_SOCKET %q XDG_RUNTIME_DIR %q TMPDIR %q: dir %s socket %s, want %s %s", c.sock, c.xdg, c.tmp, d, s, c.dir, c.want)
		}
	}
}

// PrivateDir makes or accepts only a directory of our own, mode 0700, and
// leaves anything else as it found it.
func TestPrivateDir(t *testing.T) {
	base := t.TempDir()
	fresh := filepath.Join(base, "fresh")
	if err := PrivateDir(fresh); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(fresh); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("made %v, %v", fi.Mode(), err)
	}
	if err := PrivateDir(fresh); err != nil {
		t.Fatalf("again: %v", err)
	}
	cases := []struct {
		name  string
		plant func(p string) error
		want  string
	}{
		{"symlink", func(p string) error { return os.Symlink(fresh, p) }, "is a symlink"},
		{"dangling symlink", func(p string) error { return os.Symlink(filepath.Join(base, "nothing"), p) }, "is a symlink"},
		{"file", func(p string) error { return os.WriteFile(p, nil, 0o600) }, "is not a directory"},
		{"fifo", func(p string) error { return syscall.Mkfifo(p, 0o600) }, "is not a directory"},
		{"mode 0755", func(p string) error { return mkdirMode(p, 0o755) }, "mode 0755, want 0700"},
		{"mode 0710", func(p string) error { return mkdirMode(p, 0o710) }, "mode 0710, want 0700"},
		{"sticky", func(p string) error { return mkdirMode(p, 0o1700) }, "mode 1700, want 0700"},
	}
	if os.Getuid() == 0 {
		cases = append(cases, struct {
			name  string
			plant func(p string) error
			want  string
		}{"other uid", func(p string) error {
			if err := mkdirMode(p, 0o700); err != nil {
				return err
			}
			return os.Chown(p, 65534, 65534)
		}, "owned by uid 65534"})
	}
	for _, c := range cases {
		p := filepath.Join(base, strings.ReplaceAll(c.name, " ", "-"))
		if err := c.plant(p); err != nil {
			t.Fatal(err)
		}
		var before syscall.Stat_t
		syscall.Lstat(p, &before)
		err := PrivateDir(p)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v, want one line with %q", c.name, err, c.want)
		}
		var after syscall.Stat_t
		syscall.Lstat(p, &after)
		if after.Mode != before.Mode || after.Uid != before.Uid {
			t.Errorf("%s: changed from mode %o uid %d to %o %d", c.name, before.Mode, before.Uid, after.Mode, after.Uid)
		}
	}
}

func mkdirMode(p string, mode os.FileMode) error {
	if err := os.Mkdir(p, 0o700); err != nil {
		return err
	}
	return syscall.Chmod(p, uint32(mode))
}

// Listen replaces a stale socket, but nothing else it finds there.
func TestListenLeavesNonSockets(t *testing.T) {
	p := filepath.Join(t.TempDir(), "rs.sock")
	os.WriteFile(p, []byte("precious"), 0o600)
	if ln, err := Listen(p); err == nil || !strings.Contains(err.Error(), "not a socket") {
		if ln != nil {
			ln.Close()
		}
		t.Fatalf("Listen over a file: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "precious" {
		t.Fatalf("the file is gone")
	}
}

// TestHelperForeignServer is a server of another uid, run by
// TestClientRefusesForeignServer: it reports how many bytes each client
// sent before hanging up.
func TestHelperForeignServer(t *testing.T) {
	path := os.Getenv("RS_CONTROL_FOREIGN_SERVER")
	if path == "" {
		t.Skip("a helper process")
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	c, err := ln.AcceptUnix()
	if err != nil {
		os.Exit(1)
	}
	n, _ := c.Read(make([]byte, 1<<16))
	fmt.Printf("got %d\n", n)
	os.Exit(0)
}

// The client sends nothing to a socket served by another uid.
func TestClientRefusesForeignServer(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a server as another uid")
	}
	dir := t.TempDir()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o777)
	}
	sock := filepath.Join(dir, "rs.sock")
	self := filepath.Join(dir, "control.test") // where the other uid may run it
	if b, err := os.ReadFile(os.Args[0]); err != nil || os.WriteFile(self, b, 0o755) != nil {
		t.Fatal("copy the test binary: ", err)
	}
	cmd := exec.Command(self, "-test.run=^TestHelperForeignServer$")
	cmd.Env = append(os.Environ(), "RS_CONTROL_FOREIGN_SERVER="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, Pdeathsig: syscall.SIGKILL}
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "ready" {
		t.Fatalf("helper: %q", sc.Text())
	}
	args := []string{"--db-password", "hunter2"}
	bin := "/bin/kv"
	_, err := Client{Socket: sock, Timeout: 20 * time.Second}.Do(Request{Op: OpUp, Label: "kv", Spec: &Patch{Binary: &bin, Args: &args}}, nil)
	if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "served by uid 65534") {
		t.Fatalf("client of a foreign server: %v", err)
	}
	if !sc.Scan() || sc.Text() != "got 0" {
		t.Fatalf("the foreign server %q", sc.Text())
	}
}

// A server that never answers: the call ends at its timeout, or when the
// server has said nothing for the silence bound, with ErrTimeout.
func TestClientTimeouts(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "rs.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, unanswered
		}
	}()
	for _, c := range []Client{{Socket: sock, Timeout: 200 * time.Millisecond}, {Socket: sock, Silence: 200 * time.Millisecond}} {
		_, err := c.Do(Request{Op: OpDown, Label: "kv"}, nil)
		if !errors.Is(err, ErrTimeout) || errors.Is(err, ErrUnreachable) {
			t.Errorf("%+v: %v", c, err)
		}
	}
}

// A request that takes longer than the silence bound succeeds: the
// server says it is alive meanwhile.
func TestKeepalive(t *testing.T) {
	c := serveWith(t, &Server{Keepalive: 20 * time.Millisecond, Handler: func(Request, Peer, func(string)) Reply {
		time.Sleep(500 * time.Millisecond) // a slow operation, longer than the client's silence bound
		return Reply{Message: "done"}
	}})
	c.Silence = 200 * time.Millisecond
	if r, err := c.Do(Request{Op: OpDown, Label: "kv"}, nil); err != nil || r.Message != "done" {
		t.Fatalf("%+v, %v", r, err)
	}
}

// The handler learns who asked: this process, its group and cgroup.
func TestPeerOfRequest(t *testing.T) {
	got := make(chan Peer, 1)
	c := serve(t, func(_ Request, p Peer, _ func(string)) Reply { got <- p; return Reply{} })
	if _, err := c.Do(Request{Op: OpStatus}, nil); err != nil {
		t.Fatal(err)
	}
	p := <-got
	if p.Pid != os.Getpid() || p.Uid != os.Getuid() || p.Pgid != syscall.Getpgrp() || p.Cgroup != CgroupOf(os.Getpid()) {
		t.Fatalf("peer %+v", p)
	}
}

// A flood of silent connections pushes out only its own: the server holds
// at most MaxConns, and a request is still answered.
func TestConnectionCap(t *testing.T) {
	srv := &Server{MaxConns: 8, Handler: func(Request, Peer, func(string)) Reply { return Reply{Message: "ok"} }}
	c := serveWith(t, srv)
	before := runtime.NumGoroutine()
	var held []net.Conn
	defer func() {
		for _, h := range held {
			h.Close()
		}
	}()
	for range 500 {
		h, err := net.Dial("unixpacket", c.Socket)
		if errors.Is(err, syscall.EAGAIN) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, h)
	}
	if r, err := c.Do(Request{Op: OpStatus}, nil); err != nil || r.Message != "ok" {
		t.Fatalf("status among %d silent connections: %+v, %v", len(held), r, err)
	}
	srv.mu.Lock()
	n := srv.held
	srv.mu.Unlock()
	if n > srv.MaxConns {
		t.Errorf("holds %d connections, cap %d", n, srv.MaxConns)
	}
	// Those closed to make room end as soon as they run.
	waitGoroutines(t, before+2*srv.MaxConns+4)
}
