package rs

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestConfigLaunchKeys(t *testing.T) {
	cfg := `
[service.a]
binary = "/bin/a"
listen = ["tcp:127.0.0.1:6380", "tcp:[::1]:0", "unix:/run/a.sock", "unix:@abstract"]
user = "nobody"
group = "65534"
env = { FOO = "bar", "WITH SPACE" = "x=y" }
env_file = "a.env"
workdir = "work"
umask = "0027"
stop_signal = "INT"
`
	specs, err := ParseConfig("/etc/rs/system.toml", []byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	s := specs[0]
	if !slices.Equal(listenNames(s), []string{"listen0", "listen1", "listen2", "listen3"}) {
		t.Errorf("default names: %v", listenNames(s))
	}
	if s.User != "nobody" || s.Group != "65534" || s.Umask != "0027" || s.StopSignal != syscall.SIGINT {
		t.Errorf("spec: %+v", s)
	}
	if s.Env["FOO"] != "bar" || s.Env["WITH SPACE"] != "x=y" || len(s.Env) != 2 {
		t.Errorf("env: %v", s.Env)
	}
	if s.EnvFile != "/etc/rs/a.env" || s.Workdir != "/etc/rs/work" {
		t.Errorf("relative paths: env_file %q workdir %q", s.EnvFile, s.Workdir)
	}
	if d := (Spec{}).withDefaults(); d.StopSignal != syscall.SIGTERM {
		t.Errorf("default stop signal: %v", d.StopSignal)
	}
}

func TestConfigLaunchErrors(t *testing.T) {
	for _, c := range []struct{ body, want string }{
		{`listen = ["udp:1.2.3.4:5"]`, "want tcp:HOST:PORT or unix:PATH"},
		{`listen = ["tcp:example.com:80"]`, "HOST an IP address"},
		{`listen = ["tcp:127.0.0.1:99999"]`, "tcp:HOST:PORT"},
		{`listen = ["unix:rel/path"]`, "must be absolute"},
		{`listen = ["tcp:127.0.0.1:1", "tcp:127.0.0.1:2"]` + "\nlisten_names = [\"one\"]", "1 names for 2 listen sockets"},
		{`listen = ["tcp:127.0.0.1:1"]` + "\nlisten_names = [\"a:b\"]", "no ':'"},
		{`listen = ["tcp:127.0.0.1:1", "tcp:127.0.0.1:2"]` + "\nlisten_names = [\"x\", \"x\"]", "given twice"},
		{`env = { LISTEN_PID = "1" }`, "set by rs"},
		{`env = { "A=B" = "1" }`, "without '='"},
		{`env = { A = 1 }`, "want a string"},
		{`env = "A=B"`, "want a table"},
		{`umask = "0999"`, "octal"},
		{`umask = "1777"`, "octal"},
		{`stop_signal = "15"`, "not a number"},
		{`stop_signal = "SIGFOO"`, "unknown"},
		{`user = ""`, "want a name or a number"},
	} {
		_, err := ParseConfig("x.toml", []byte("[service.a]\nbinary = \"/bin/a\"\n"+c.body+"\n"))
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: err %v, want one line with %q", c.body, err, c.want)
		}
	}
}

// The environment's order: rs's own, then env_file, then env, then what
// rs sets; rs's own reserved variables never pass.
func TestLaunchEnvPrecedence(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "env")
	os.WriteFile(f, []byte("# comment\n  A = file  \nB='quoted'\nC=\"dq\"\nexported=1\n"), 0o644)
	base := []string{"A=rs", "B=rs", "D=rs", "LISTEN_PID=1", "NOTIFY_SOCKET=/x", "RS_LABEL=outer"}
	env, err := launchEnv(base, Spec{Label: "svc", EnvFile: f, Env: map[string]string{"B": "env", "E": "env"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"A=file", "B=env", "D=rs", "C=dq", "exported=1", "E=env", "RS_LABEL=svc"}
	if !slices.Equal(env, want) {
		t.Errorf("env %q, want %q", env, want)
	}
	for _, c := range []struct{ body, want string }{
		{"NOEQUALS\n", "x:1: want KEY=VALUE"},
		{"A=1\nLISTEN_FDS=2\n", "x:2: LISTEN_FDS is set by rs"},
	} {
		p := filepath.Join(dir, "x")
		os.WriteFile(p, []byte(c.body), 0o644)
		if _, err := launchEnv(nil, Spec{EnvFile: p}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.body, err, c.want)
		}
	}
	_, err = launchEnv(nil, Spec{EnvFile: filepath.Join(dir, "missing")})
	if err == nil || err.Error() != "env_file "+filepath.Join(dir, "missing")+": no such file or directory" {
		t.Errorf("missing env_file: %v", err)
	}
}

// A non-root rs refuses another user or group at validation.
func TestCheckOwnIdentity(t *testing.T) {
	saved := own
	defer func() { own = saved }()
	own.root, own.uid, own.gid, own.user, own.grp = false, "1000", "1000", "me", "mine"
	for _, s := range []Spec{{User: "me"}, {User: "1000", Group: "mine"}, {Group: "1000"}} {
		if err := checkOwnIdentity(s); err != nil {
			t.Errorf("%+v: %v", s, err)
		}
	}
	for _, s := range []Spec{{User: "root"}, {User: "0"}, {Group: "wheel"}} {
		if err := checkOwnIdentity(s); err == nil || !strings.Contains(err.Error(), "not root") {
			t.Errorf("%+v: %v", s, err)
		}
	}
	err := Validate([]Spec{{Label: "a", Binary: "/bin/a", User: "root"}})
	if err == nil || err.Error() != `service "a": user "root": rs runs as uid 1000, not root, and cannot change a service's user` {
		t.Errorf("Validate: %v", err)
	}
}
