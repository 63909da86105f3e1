package tests

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/reincarnation/rs/internal/resp"
	"github.com/reincarnation/rs/rs/control"
)

// What a process gets at its exec: listen sockets, credentials,
// environment, directory, umask, stop signal, `service signal`.

var (
	envdumpOnce sync.Once
	envdumpErr  error
)

// envdump builds the fixture (a program without sef) into binDir once.
func envdump(t *testing.T) string {
	t.Helper()
	envdumpOnce.Do(func() {
		out, err := exec.Command("go", "build", "-o", bin("envdump"), "github.com/reincarnation/rs/tests/fixtures/envdump").CombinedOutput()
		if err != nil {
			envdumpErr = errors.New(string(out))
		}
	})
	if envdumpErr != nil {
		t.Fatalf("build envdump: %v", envdumpErr)
	}
	return bin("envdump")
}

type dumpReport struct {
	Name          string         `json:"name"`
	Sockname      string         `json:"sockname"`
	FD            int            `json:"fd"`
	Pid           int            `json:"pid"`
	ListenPID     string         `json:"listen_pid"`
	ListenFDs     string         `json:"listen_fds"`
	ListenFDNames string         `json:"listen_fdnames"`
	Uid           int            `json:"uid"`
	Cwd           string         `json:"cwd"`
	Umask         string         `json:"umask"`
	Env           []string       `json:"env"`
	Signals       map[string]int `json:"signals"`
}

// askDump reads envdump's report from one of its sockets.
func askDump(t *testing.T, network, addr string) dumpReport {
	t.Helper()
	c, err := net.DialTimeout(network, addr, waitTimeout)
	if err != nil {
		t.Fatalf("dial %s %s: %v", network, addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitTimeout))
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		t.Fatalf("read %s: %v", addr, err)
	}
	var r dumpReport
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("report %q: %v", line, err)
	}
	return r
}

// procStatus returns the fields of /proc/<pid>/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			out[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return out
}

// procEnv returns /proc/<pid>/environ as a map.
func procEnv(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range strings.Split(string(b), "\x00") {
		if k, v, ok := strings.Cut(e, "="); ok {
			out[k] = v
		}
	}
	return out
}

// A program that knows nothing of sef, run as nobody with two rs-held
// sockets: it finds them at fds 3 and 4 by sd_listen_fds's protocol,
// with LISTEN_PID its own pid, the sef channel after them, the
// environment in its documented order, its directory and umask.
func TestLaunchWhatTheProcessGets(t *testing.T) {
	dump := envdump(t)
	t.Setenv("RS_TEST_OUTER", "rs")
	t.Setenv("SHADOWED", "rs")
	t.Setenv("LISTEN_FDS", "9") // rs's own: must not reach the service
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755) // nobody goes into its workdir
	os.Chmod(dir, 0o755)
	work := filepath.Join(dir, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	envFile := filepath.Join(dir, "env")
	os.WriteFile(envFile, []byte("# a comment\n\nSHADOWED=file\nFILEONLY=\"quoted value\"\n"), 0o644)
	sock := filepath.Join(dir, "admin.sock")
	// A stale socket file at the path: rs removes it and binds anew.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	addr := freeAddr(t)
	r := startRS(t, `
[service.dump]
binary = "`+dump+`"
listen = ["tcp:`+addr+`", "unix:`+sock+`"]
listen_names = ["web", "admin"]
user = "nobody"
env = { FOO = "bar", SHADOWED = "env" }
env_file = "`+envFile+`"
workdir = "`+work+`"
umask = "0027"
init_timeout = "60s"
period = "0s"
`)
	st := r.waitFor2("dump", func(s control.Status) bool { return s.Pid != 0 })
	web := askDump(t, "tcp", addr)
	admin := askDump(t, "unix", sock)
	pid := st.Pid
	for _, rep := range []dumpReport{web, admin} {
		if rep.Pid != pid || rep.ListenPID != strconv.Itoa(pid) {
			t.Errorf("%s: pid %d, LISTEN_PID %q; rs says pid %d", rep.Name, rep.Pid, rep.ListenPID, pid)
		}
		if rep.ListenFDs != "2" || rep.ListenFDNames != "web:admin" {
			t.Errorf("%s: LISTEN_FDS %q LISTEN_FDNAMES %q", rep.Name, rep.ListenFDs, rep.ListenFDNames)
		}
		if rep.Uid != 65534 || rep.Cwd != work || rep.Umask != "0027" {
			t.Errorf("%s: uid %d cwd %q umask %q", rep.Name, rep.Uid, rep.Cwd, rep.Umask)
		}
	}
	if web.Name != "web" || web.FD != 3 || web.Sockname != addr {
		t.Errorf("fd 3: %+v", web)
	}
	if admin.Name != "admin" || admin.FD != 4 || admin.Sockname != sock {
		t.Errorf("fd 4: %+v", admin)
	}
	ps := procStatus(t, pid)
	want := map[string]string{"Uid": "65534 65534 65534 65534", "Gid": "65534 65534 65534 65534", "Groups": "65534", "Umask": "0027"}
	for k, v := range want {
		if ps[k] != v {
			t.Errorf("/proc/%d/status %s: %q, want %q", pid, k, ps[k], v)
		}
	}
	if cwd, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd"); cwd != work {
		t.Errorf("cwd %q, want %q", cwd, work)
	}
	env := procEnv(t, pid)
	wantEnv := map[string]string{
		"RS_TEST_OUTER": "rs", "SHADOWED": "env", "FILEONLY": "quoted value", "FOO": "bar",
		"RS_LABEL": "dump", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:admin", "LISTEN_PID": strconv.Itoa(pid),
		"RS_CHANNEL_FD": "5", // the sef channel comes after the listeners
	}
	for k, v := range wantEnv {
		if env[k] != v {
			t.Errorf("environ %s=%q, want %q", k, env[k], v)
		}
	}
	// The socket file is the service's user's, and anyone may connect.
	var fi syscall.Stat_t
	if err := syscall.Lstat(sock, &fi); err != nil {
		t.Fatal(err)
	}
	if fi.Mode&syscall.S_IFMT != syscall.S_IFSOCK || fi.Mode&0o777 != 0o666 || fi.Uid != 65534 || fi.Gid != 65534 {
		t.Errorf("socket file: mode %o uid %d gid %d", fi.Mode, fi.Uid, fi.Gid)
	}

	// service signal: the main process gets it, rs and the rest not.
	r.mustService("signal", "USR1", "dump")
	r.mustService("signal", "SIGHUP", "dump")
	// The fixture counts signals in a goroutine of its own: wait for both.
	var rep dumpReport
	r.waitFor("the fixture to count USR1 and HUP", func() bool {
		rep = askDump(t, "tcp", addr)
		return rep.Signals["SIGUSR1"] >= 1 && rep.Signals["SIGHUP"] >= 1
	})
	if rep.Signals["SIGUSR1"] != 1 || rep.Signals["SIGHUP"] != 1 {
		t.Errorf("signals seen: %v", rep.Signals)
	}
	for _, bad := range [][]string{{"signal", "SIGFOO", "dump"}, {"signal", "15", "dump"}, {"signal", "USR1", "nosuch"}, {"signal", "USR1"}} {
		_, errs, code := r.service(bad...)
		if code == 0 || strings.Count(strings.TrimSpace(errs), "\n") != 0 || errs == "" {
			t.Errorf("service %v: exit %d, stderr %q: want one line and a failure", bad, code, errs)
		}
	}

	// stop_signal is SIGTERM by default: envdump says which it got.
	r.mustService("down", "dump")
	if _, _, code := r.service("signal", "USR1", "dump"); code == 0 {
		t.Errorf("signal to a service that is down succeeded")
	}
	logf := filepath.Join(r.logDir, "dump.log")
	r.waitFor("got SIGTERM in its log", func() bool {
		b, _ := os.ReadFile(logf)
		return strings.Contains(string(b), "got SIGTERM")
	})
}

// stop_signal = "SIGINT": the graceful stop's signal step sends SIGINT.
func TestLaunchStopSignal(t *testing.T) {
	dump := envdump(t)
	r := startRS(t, `
[service.dump]
binary = "`+dump+`"
stop_signal = "SIGINT"
stop_grace = "100ms"
init_timeout = "60s"
period = "0s"
`)
	r.waitFor2("dump", func(s control.Status) bool { return s.Pid != 0 })
	logf := filepath.Join(r.logDir, "dump.log")
	r.waitFor("envdump ready", func() bool {
		b, _ := os.ReadFile(logf)
		return strings.Contains(string(b), "envdump ready")
	})
	r.mustService("down", "dump")
	var b []byte
	r.waitFor("its last words in its log", func() bool {
		b, _ = os.ReadFile(logf)
		return strings.Contains(string(b), "got SIG")
	})
	if !strings.Contains(string(b), "got SIGINT") || strings.Contains(string(b), "got SIGTERM") {
		t.Errorf("log after down with stop_signal SIGINT:\n%s", b)
	}
}

// kv, a sef service, with `listen`: it finds rs's socket in its fd store
// by name (listen_names = ["listener"]) and opens none of its own; run
// as nobody it serves through crash after crash with no connection
// refused; each instance's LISTEN_PID is its own pid. `service up --env`
// adds variables. A path that is not a socket is left alone.
func TestLaunchSefListenCrashRefusesNone(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "kv.sock")
	notSock := filepath.Join(dir, "file")
	os.WriteFile(notSock, []byte("keep me"), 0o644)
	r := startRS(t, "")
	_, errs, code := r.service("up", "--binary", bin("kv"), "--listen", "unix:"+notSock, "--listen-names", "listener", "bad")
	if code == 0 || !strings.Contains(errs, "is not a socket") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Errorf("up with a regular file at the socket's path: exit %d, %q", code, errs)
	}
	if b, _ := os.ReadFile(notSock); string(b) != "keep me" {
		t.Errorf("the file at the socket's path was touched: %q", b)
	}
	r.mustService("up", "--binary", bin("kv"), "--args", "--listen 127.0.0.1:1 --allow-faults", "--listen", "unix:"+sock,
		"--listen-names", "listener", "--user", "nobody", "--env", "A=b,c", "--env", "D=e", "--backoff-reset", "10ms", "kv")
	st := r.status("kv")
	env := procEnv(t, st.Pid)
	for k, v := range map[string]string{"A": "b,c", "D": "e", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "listener", "LISTEN_PID": strconv.Itoa(st.Pid), "RS_CHANNEL_FD": "4"} {
		if env[k] != v {
			t.Errorf("kv's environ %s=%q, want %q", k, env[k], v)
		}
	}
	if ps := procStatus(t, st.Pid); !strings.HasPrefix(ps["Uid"], "65534 ") {
		t.Errorf("kv's Uid: %q", ps["Uid"])
	}
	errDial := errors.New("dial")
	ping := func() error {
		c, err := resp.Dial("unix", sock, waitTimeout)
		if err != nil {
			return errors.Join(errDial, err) // refused, or no socket there at all
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(waitTimeout))
		v, err := c.Do("PING")
		if err == nil && v.Str != "PONG" {
			err = errors.New("reply " + v.Str)
		}
		return err
	}
	if err := ping(); err != nil {
		t.Fatalf("kv on rs's socket: %v", err)
	}
	var refused, failed, served atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	end := sync.OnceFunc(func() { close(stop); <-done })
	t.Cleanup(end) // a crash step that fails the test ends the client too
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			switch err := ping(); {
			case err == nil:
				served.Add(1)
			case errors.Is(err, errDial):
				refused.Add(1)
			default:
				failed.Add(1) // a connection kv took and died with
			}
		}
	}()
	pid := st.Pid
	const kills = 4
	for range kills {
		syscall.Kill(pid, syscall.SIGKILL)
		st = r.waitState("kv", control.StateRunning, pid)
		pid = st.Pid
		if env := procEnv(t, pid); env["LISTEN_PID"] != strconv.Itoa(pid) {
			t.Errorf("after a crash: LISTEN_PID %q, pid %d", env["LISTEN_PID"], pid)
		}
	}
	before := served.Load()
	r.waitFor("a request served after the last crash", func() bool { return served.Load() > before })
	end()
	t.Logf("%d crashes: %d requests served, %d refused, %d failed on a dying instance", kills, served.Load(), refused.Load(), failed.Load())
	if refused.Load() != 0 {
		t.Errorf("%d dials refused (or found no socket) across %d crashes", refused.Load(), kills)
	}
	b, _ := os.ReadFile(filepath.Join(r.logDir, "kv.log"))
	if strings.Contains(string(b), "from=sef.Listen") || strings.Contains(string(b), "closing unknown fd") {
		t.Errorf("kv did not take rs's socket from its fd store:\n%s", b)
	}
}

// The sockets of `listen` are held listeners like those of the fd store:
// a service left down by its restart policy turns clients away (TCP
// refused, unix closed at once), `service up` serves again on the
// very same sockets; an update and a standby's take-over keep them.
func TestLaunchListenHeldAcrossDownUpdateStandby(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "kv.sock")
	addr := freeAddr(t)
	r := startRS(t, `
[service.kv]
binary = "`+bin("kv")+`"
args = ["--listen", "127.0.0.1:1"]
listen = ["unix:`+sock+`", "tcp:`+addr+`"]
listen_names = ["listener", "spare"]
restart = "never"
`)
	st := r.waitState("kv", control.StateRunning, 0)
	unixInode, tcpInode := listenerInode(t, "unix", sock), listenerInode(t, "tcp", addr)
	if v := kvDoUnix(t, sock, "PING"); v != "PONG" {
		t.Fatalf("PING: %q", v)
	}
	syscall.Kill(st.Pid, syscall.SIGKILL)
	r.waitState("kv", control.StateDown, 0)
	r.waitFor("the unix socket turning clients away", func() bool { return turnedAway(t, "unix", sock) == "closed" })
	if how := turnedAway(t, "tcp", addr); how != "refused" {
		t.Errorf("tcp while down: %s", how)
	}
	r.mustService("up", "--restart", "always", "kv") // and a standby may take over from now on
	if v := kvDoUnix(t, sock, "PING"); v != "PONG" {
		t.Fatalf("PING after up: %q", v)
	}
	r.mustService("update", "kv")
	r.mustService("clone", "kv")
	st = r.waitFor2("kv", func(s control.Status) bool { return s.StandbyPid != 0 })
	standby := st.StandbyPid
	if env := procEnv(t, standby); env["LISTEN_PID"] != strconv.Itoa(standby) || env["LISTEN_FDNAMES"] != "listener:spare" {
		t.Errorf("standby's environ: LISTEN_PID %q (pid %d), LISTEN_FDNAMES %q", env["LISTEN_PID"], standby, env["LISTEN_FDNAMES"])
	}
	syscall.Kill(st.Pid, syscall.SIGKILL)
	r.waitFor2("kv", func(s control.Status) bool { return s.State == control.StateRunning && s.Pid == standby })
	if v := kvDoUnix(t, sock, "PING"); v != "PONG" {
		t.Fatalf("PING after the standby took over: %q", v)
	}
	if u, tc := listenerInode(t, "unix", sock), listenerInode(t, "tcp", addr); u != unixInode || tc != tcpInode {
		t.Errorf("listening sockets changed: unix %s -> %s, tcp %s -> %s", unixInode, u, tcpInode, tc)
	}
	r.mustService("down", "kv")
	if _, err := net.DialTimeout("unix", sock, clientBound); err == nil {
		t.Errorf("the unix socket still accepts after down")
	}
}

func kvDoUnix(t *testing.T, sock string, args ...string) string {
	t.Helper()
	c, err := resp.Dial("unix", sock, waitTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", sock, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitTimeout))
	v, err := c.Do(args...)
	if err != nil {
		t.Fatalf("kv %v: %v", args, err)
	}
	return v.Str
}
