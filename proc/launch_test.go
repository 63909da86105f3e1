package proc

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The child's LISTEN_PID is its own pid, its umask the one asked for
// (and rs's own is untouched), its credentials those given.
func TestStartListenPIDUmaskCredential(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	w, err := os.Create(out) // the child, as nobody, writes to rs's fd
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	before := syscall.Umask(0o022)
	syscall.Umask(before)
	mask := 0o027
	var p *Process
	p, err = Start(Spec{
		Path:   "/bin/sh",
		Args:   []string{"-c", `echo "$LISTEN_PID $$ $(umask) $(id -u) $(id -g) $(id -G)"`},
		Stdout: w,
		Env:    []string{"PATH=/usr/bin:/bin", "A=b"},
		Umask:  &mask, PidEnv: []string{"LISTEN_PID"},
		Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{65534, 100}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if e := p.Exit(); !e.Success() {
		t.Fatalf("child: %v", e)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	want := []string{strconv.Itoa(p.Pid()), strconv.Itoa(p.Pid()), "0027", "65534", "65534", "65534", "100"}
	if strings.Join(f, " ") != strings.Join(want, " ") {
		t.Errorf("child saw %q, want %q", f, want)
	}
	after := syscall.Umask(0o022)
	syscall.Umask(after)
	if after != before {
		t.Errorf("rs's umask changed from %o to %o", before, after)
	}
}

// BenchmarkStartListenPID is BenchmarkStart's plain case with what a
// service with `listen` or `umask` costs on top: the exec stop that
// writes LISTEN_PID, and the umask set and put back around the fork;
// and, for comparison, the shim rs does not use: a second exec, of a Go
// program that sets LISTEN_PID (testdata/goshim).
func BenchmarkStartListenPID(b *testing.B) {
	mask := 0o027
	shim := filepath.Join(b.TempDir(), "goshim")
	if out, err := exec.Command("go", "build", "-o", shim, "./testdata/goshim").CombinedOutput(); err != nil {
		b.Fatalf("build goshim: %v\n%s", err, out)
	}
	for _, bc := range []struct {
		name string
		spec Spec
	}{
		{"plain", Spec{Path: "/bin/true"}},
		{"listen-pid", Spec{Path: "/bin/true", PidEnv: []string{"LISTEN_PID"}}},
		{"umask", Spec{Path: "/bin/true", Umask: &mask}},
		{"listen-pid+umask", Spec{Path: "/bin/true", PidEnv: []string{"LISTEN_PID"}, Umask: &mask}},
		{"go-shim", Spec{Path: shim, Args: []string{"/bin/true"}, Env: []string{"LISTEN_PID=0"}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				p, err := Start(bc.spec)
				if err != nil {
					b.Fatal(err)
				}
				<-p.Done()
			}
		})
	}
}
