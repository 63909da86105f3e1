package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/reincarnation/rs/internal/resp"
)

// The tests below run the real main in a child process (the test binary
// re-executed in the "kv" role), standalone since no rs channel is in its
// environment, and make it fail in each of the ways DEBUG FAULT offers.

const roleEnv = "KV_TEST_ROLE"

func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "kv" {
		// abort dumps core with the default action; keep test dirs clean.
		syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{})
		// TestMain runs before the testing flags are parsed, so the
		// arguments are kv's own.
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

type child struct {
	cmd    *exec.Cmd
	addr   string
	mu     sync.Mutex
	stderr bytes.Buffer
	exited chan struct{} // closed once cmd.Wait has returned
	err    error         // cmd.Wait's result
}

// log is what kv wrote to stderr so far, for failure messages.
func (c *child) log() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stderr.String()
}

var listeningRE = regexp.MustCompile(`msg=listening addr=(\S+)`)

// kvCommand is the test binary in the kv role, without an rs channel.
func kvCommand(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	// GORACE: a race-enabled binary otherwise sleeps 1s at exit.
	cmd.Env = append(envWithout("RS_"), roleEnv+"=kv",
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	return cmd
}

// startKV starts kv with args and returns once it listens.
func startKV(t *testing.T, args ...string) *child {
	t.Helper()
	cmd := kvCommand(args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, exited: make(chan struct{})}
	listening := make(chan string, 1)
	readDone := make(chan struct{})
	go func() {
		// Drain everything: a traceback must never block the child on a
		// full pipe.
		defer close(readDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			c.mu.Lock()
			c.stderr.WriteString(sc.Text() + "\n")
			c.mu.Unlock()
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case listening <- m[1]:
				default:
				}
			}
		}
	}()
	go func() {
		<-readDone // Wait closes the pipe; read it all first
		c.err = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-c.exited
	})
	select {
	case addr := <-listening:
		c.addr = addr
		for i, a := range args {
			if a == "--listen" && i+1 < len(args) && strings.HasPrefix(args[i+1], "unix:") {
				c.addr = args[i+1] // the log shows the bare path
			}
		}
	case <-c.exited:
		t.Fatalf("kv exited at start-up: %v\n%s", c.err, c.log())
	case <-time.After(wait):
		t.Fatalf("kv did not start listening\n%s", c.log())
	}
	return c
}

func envWithout(prefix string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, prefix) {
			env = append(env, kv)
		}
	}
	return env
}

// wait returns the child's exit status, bounded.
func (c *child) wait(t *testing.T) syscall.WaitStatus {
	t.Helper()
	select {
	case <-c.exited:
	case <-time.After(wait):
		t.Fatalf("kv did not exit\n%s", c.log())
	}
	var ee *exec.ExitError
	if c.err != nil && !errors.As(c.err, &ee) {
		t.Fatalf("wait: %v", c.err)
	}
	return c.cmd.ProcessState.Sys().(syscall.WaitStatus)
}

func (c *child) dial(t *testing.T) *resp.Client {
	t.Helper()
	cl, err := resp.DialAddr(c.addr, wait)
	if err != nil {
		t.Fatalf("dial kv: %v\n%s", err, c.log())
	}
	t.Cleanup(func() { cl.Close() })
	cl.SetDeadline(time.Now().Add(wait))
	return cl
}

func sockArgs(t *testing.T) []string {
	return []string{"--listen", "unix:" + filepath.Join(t.TempDir(), "kv.sock"), "--allow-faults"}
}

func status(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return "exit " + strconv.Itoa(ws.ExitStatus())
}

func TestMainFatalFaults(t *testing.T) {
	tests := []struct {
		kind string
		want string
	}{
		{"exit", "exit 3"},
		{"panic", "exit 2"},
		{"kill", "signal " + syscall.SIGKILL.String()},
		{"abort", "signal " + syscall.SIGABRT.String()},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			k := startKV(t, sockArgs(t)...)
			c := k.dial(t)
			if v, err := c.Do("DEBUG", "FAULT", tt.kind); err != nil || v.Str != "OK" {
				t.Fatalf("DEBUG FAULT %s = %v, %v; want +OK before the fault\n%s", tt.kind, v, err, k.log())
			}
			if got := status(k.wait(t)); got != tt.want {
				t.Fatalf("kv ended with %s, want %s\n%s", got, tt.want, k.log())
			}
		})
	}
}

func TestMainHangAndSpin(t *testing.T) {
	for _, kind := range []string{"hang", "spin"} {
		t.Run(kind, func(t *testing.T) {
			k := startKV(t, sockArgs(t)...)
			if v, err := k.dial(t).Do("DEBUG", "FAULT", kind); err != nil || v.Str != "OK" {
				t.Fatalf("DEBUG FAULT %s = %v, %v", kind, v, err)
			}
			// The process lives on and still accepts, but its main loop
			// answers nothing. Only the absence of a reply is checked, so
			// the short deadline cannot make this fail spuriously.
			c := k.dial(t)
			c.SetDeadline(time.Now().Add(200 * time.Millisecond))
			if v, err := c.Do("PING"); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("PING after %s = %v, %v; want no answer", kind, v, err)
			}
			select {
			case <-k.exited:
				t.Fatalf("kv exited after %s: %v", kind, k.err)
			default:
			}
		})
	}
}

func TestMainStopAndContinue(t *testing.T) {
	k := startKV(t, sockArgs(t)...)
	c := k.dial(t)
	c.Send("DEBUG", "FAULT", "stop")
	c.Send("PING") // runs once the process is continued
	c.Flush()
	if v, err := c.Read(); err != nil || v.Str != "OK" {
		t.Fatalf("DEBUG FAULT stop = %v, %v", v, err)
	}
	stopped := make(chan error, 1)
	go func() {
		var ws syscall.WaitStatus
		// WUNTRACED reports the stop without reaping; the exit is still
		// cmd.Wait's to collect.
		_, err := syscall.Wait4(k.cmd.Process.Pid, &ws, syscall.WUNTRACED, nil)
		if err == nil && !ws.Stopped() {
			err = fmt.Errorf("status %v, want stopped", status(ws))
		}
		stopped <- err
	}()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatal("kv did not stop itself")
	}
	k.cmd.Process.Signal(syscall.SIGCONT)
	if v, err := c.Read(); err != nil || v.Str != "PONG" {
		t.Fatalf("PING after SIGCONT = %v, %v", v, err)
	}
}

func TestMainStandalone(t *testing.T) {
	k := startKV(t, "--listen", "127.0.0.1:0", "--allow-faults")
	c := k.dial(t)
	info := do(t, c, "INFO", "server")
	for _, want := range []string{"version:dev\r\n", fmt.Sprintf("process_id:%d\r\n", k.cmd.Process.Pid), "uptime_in_seconds:"} {
		if !strings.Contains(info.Str, want) {
			t.Errorf("INFO lacks %q:\n%s", want, info.Str)
		}
	}
	// Without an rs channel the channel faults have nothing to act on.
	if v := do(t, c, "DEBUG", "FAULT", "garbage"); !v.IsError() {
		t.Errorf("DEBUG FAULT garbage standalone = %v, want an error", v)
	}
	// SIGTERM: a graceful stop, exit 0, clients disconnected.
	k.cmd.Process.Signal(syscall.SIGTERM)
	if got := status(k.wait(t)); got != "exit 0" {
		t.Fatalf("kv ended with %s after SIGTERM, want exit 0\n%s", got, k.log())
	}
	if v, err := c.Read(); err == nil {
		t.Fatalf("read after stop = %v, want the connection closed", v)
	}
	if !strings.Contains(k.log(), "exiting after a graceful stop") {
		t.Errorf("no stop logged:\n%s", k.log())
	}
}

func TestMainBadStart(t *testing.T) {
	tests := []struct {
		args []string
		want int
	}{
		{[]string{"--nosuch"}, 2},
		{[]string{"extra"}, 2},
		{[]string{"--listen", "256.0.0.1:bad"}, 1}, // init fails
	}
	for _, tt := range tests {
		// In a child: start-up installs signal handlers, which the test
		// binary should not get.
		cmd := kvCommand(tt.args...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != tt.want {
			t.Errorf("kv %q: %v, want exit %d\n%s", tt.args, err, tt.want, out)
		}
	}
}
