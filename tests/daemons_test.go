//go:build daemons

package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
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
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "redis-cli", append([]string{"-s", sock}, args...)...).CombinedOutput()
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

// postgresConfig is the README's example, word for word but for the
// paths: PostgreSQL's own postmaster as user postgres, on a unix socket
// only, stopped by SIGINT (its fast shutdown).
const postgresConfig = `
[service.postgres]
type        = "notify"
binary      = "/usr/lib/postgresql/15/bin/postgres"
args        = ["-D", "$DIR/pg/data", "-k", "$DIR/pg", "-c", "listen_addresses="]
user        = "postgres"
stop_signal = "SIGINT"
stop_grace  = "30s"
init_timeout = "60s"
`

const postgresBin = "/usr/lib/postgresql/15/bin"

func psql(t *testing.T, dir string, query string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(postgresBin, "psql"), "-h", dir, "-U", "postgres", "-At", "-c", query).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// postgresProcs are the live processes whose command line names data.
func postgresProcs(data string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), data) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestDaemonPostgres: PostgreSQL 15's postmaster as a notify service run
// as user postgres on a data directory made by initdb: READY=1 makes it
// running, psql answers, kill -9 of the postmaster brings it back
// answering, and down (SIGINT: fast shutdown) leaves no process.
func TestDaemonPostgres(t *testing.T) {
	for _, b := range []string{"postgres", "initdb", "psql"} {
		if _, err := os.Stat(filepath.Join(postgresBin, b)); err != nil {
			t.Skipf("PostgreSQL 15 not installed (make test-daemons installs it from Debian): %v", err)
		}
	}
	if os.Getuid() != 0 {
		t.Skip(needsRoot)
	}
	pg, err := user.Lookup("postgres")
	if err != nil {
		t.Skipf("no user postgres: %v", err)
	}
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	// initdb as postgres in a directory postgres can reach: the test's
	// temp directories are 0700 root.
	base := t.TempDir()
	for d := base; d != filepath.Dir(d) && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o711)
	}
	dir := filepath.Join(base, "pg")
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	initdb := exec.Command(filepath.Join(postgresBin, "initdb"), "-D", data, "-U", "postgres", "--auth", "trust")
	initdb.Dir = dir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	r := startRS(t, strings.ReplaceAll(postgresConfig, "$DIR", base))
	st := r.waitState("postgres", control.StateRunning, 0)
	if st.Type != "notify" {
		t.Errorf("type %q", st.Type)
	}
	if out, err := psql(t, dir, "select 40 + 2"); err != nil || out != "42" {
		t.Fatalf("psql: %q %v", out, err)
	}
	if out, _ := psql(t, dir, "select pg_postmaster_start_time() is not null, current_user"); out != "t|postgres" {
		t.Errorf("psql: %q", out)
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", st.Pid)); err != nil || !strings.Contains(string(b), fmt.Sprintf("\nUid:\t%d\t%d", uid, uid)) {
		t.Errorf("the postmaster does not run as postgres (%d): %v", uid, err)
	}

	// kill -9 of the postmaster: reincarnated, answering again.
	if err := syscall.Kill(st.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st2 := r.waitState("postgres", control.StateRunning, st.Pid)
	if st2.Restarts != 1 {
		t.Errorf("after kill -9: restarts %d, last_exit %q", st2.Restarts, st2.LastExit)
	}
	r.waitFor("psql after the restart", func() bool {
		out, err := psql(t, dir, "select 1")
		return err == nil && out == "1"
	})

	// down: SIGINT, PostgreSQL's fast shutdown; it exits 0, nothing left.
	r.mustService("down", "postgres")
	r.waitFor("rs's log to say postgres stopped with exit 0", func() bool {
		return strings.Contains(r.log.String(), `msg=stopped label=postgres exit="exit 0"`)
	})
	if left := postgresProcs(data); len(left) != 0 {
		t.Errorf("processes of the data directory left after down: %v", left)
	}
	if kids, _ := children(r.cmd.Process.Pid); len(kids) != 0 {
		t.Errorf("rs still has children after down: %v", kids)
	}
}
