//go:build daemons

package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/reincarnation/rs/rs/control"
)

// Real daemons nobody here wrote, under rs (make test-daemons, which
// installs them from Debian; a daemon that cannot be had is skipped).

// redisConfig is the README's example, word for word but for the paths.
const redisConfig = `
[service.redis]
type    = "notify"
binary  = "/usr/bin/redis-server"
args    = ["--supervised", "systemd", "--daemonize", "no", "--port", "0",
           "--unixsocket", "$DIR/redis.sock", "--dir", "$DIR", "--save", ""]
restart = "always"
`

func redisCLI(t *testing.T, sock string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("redis-cli", append([]string{"-s", sock}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// TestDaemonRedis: redis-server --supervised systemd as a notify
// service: READY=1 makes it running, its STATUS= is shown, kill -9 brings
// it back, redis-cli works across that, and down stops it cleanly with
// nothing left behind.
func TestDaemonRedis(t *testing.T) {
	for _, b := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("%s not installed (make test-daemons installs it from Debian): %v", b, err)
		}
	}
	r := startRS(t, redisConfig)
	sock := filepath.Join(r.dir, "redis.sock")
	st := r.waitFor2("redis", func(s control.Status) bool {
		return s.State == control.StateRunning && s.StatusText != ""
	})
	if st.Type != "notify" || st.StatusText != "Ready to accept connections" {
		t.Errorf("redis: type %q, status_text %q", st.Type, st.StatusText)
	}
	if out := r.mustService("status"); !strings.Contains(out, "redis: type notify, status: Ready to accept connections") {
		t.Errorf("status:\n%s", out)
	}
	if out, err := redisCLI(t, sock, "SET", "k", "v"); err != nil || out != "OK" {
		t.Fatalf("redis-cli SET: %q %v", out, err)
	}
	if out, _ := redisCLI(t, sock, "INFO", "server"); !strings.Contains(out, "process_id:"+strconv.Itoa(st.Pid)) {
		t.Errorf("INFO server does not name pid %d:\n%s", st.Pid, out)
	}

	// kill -9: reincarnated, and answering again.
	if err := syscall.Kill(st.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st2 := r.waitState("redis", control.StateRunning, st.Pid)
	if st2.Restarts != 1 || st2.LastExit != "terminated: SIGKILL" {
		t.Errorf("after kill -9: restarts %d, last_exit %q", st2.Restarts, st2.LastExit)
	}
	r.waitFor("redis-cli PING after the restart", func() bool {
		out, err := redisCLI(t, sock, "PING")
		return err == nil && out == "PONG"
	})

	// down: SIGTERM, redis says STOPPING=1 and exits 0; nothing left.
	r.mustService("down", "redis")
	if st := r.status("redis"); st.State != control.StateDown || st.Pid != 0 || st.StatusText != "" {
		t.Errorf("after down: %+v", st)
	}
	r.waitFor("rs's log to say redis stopped with exit 0", func() bool {
		return strings.Contains(r.log.String(), `msg=stopped label=redis exit="exit 0"`)
	})
	if alive(st2.Pid) {
		t.Errorf("redis-server %d outlived its down", st2.Pid)
	}
	if kids, _ := children(r.cmd.Process.Pid); len(kids) != 0 {
		t.Errorf("rs still has children after down: %v", kids)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("redis's socket left behind: %v", err)
	}
}
