package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The shipped examples: examples/rs.service, examples/Dockerfile and
// examples/k8s/pod.yaml, each checked with the tools that exist here and
// run as far as can be without systemd, a docker daemon or a cluster.

// unitKeys reads a systemd unit: every key of every section, in order.
func unitKeys(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not key=value: %q", path, line)
		}
		keys[k] = append(keys[k], v)
	}
	return keys
}

// movePaths moves the paths of an installed system (/usr/local/bin,
// /etc/rs, /run/rs, /var/log/rs) in a command line to the test's own
// directories.
func movePaths(s string, dirs map[string]string) string {
	for from, to := range dirs {
		s = strings.ReplaceAll(s, from, to)
	}
	return s
}

// examples/rs.service: systemd-analyze verify finds nothing wrong with
// it; its ExecStart, run as systemd would (NOTIFY_SOCKET, WATCHDOG_USEC
// of its WatchdogSec, the RuntimeDirectory made), sends READY=1 once the
// services run; its ExecReload works; its KillSignal makes rs say
// STOPPING=1 and exit 0.
func TestSystemdUnitAsShipped(t *testing.T) {
	unit := filepath.Join("..", "examples", "rs.service")
	keys := unitKeys(t, unit)
	for k, want := range map[string]string{"Type": "notify", "KillMode": "mixed", "KillSignal": "SIGTERM", "NotifyAccess": "main"} {
		if got := keys[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s=%v, want %s", k, got, want)
		}
	}
	if len(keys["WatchdogSec"]) != 1 || len(keys["ExecStart"]) != 1 || len(keys["ExecReload"]) != 1 {
		t.Fatalf("want one WatchdogSec, ExecStart and ExecReload: %v", keys)
	}
	dir := t.TempDir()
	dirs := map[string]string{"/usr/local/bin/": binDir + "/", "/etc/rs/": dir + "/etc/", "/run/rs/": dir + "/run/", "/var/log/rs": dir + "/log"}

	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("no systemd-analyze here: the unit is not verified")
	} else {
		// verify checks that the binaries exist: the built ones stand
		// in for the installed ones.
		b, _ := os.ReadFile(unit)
		moved := filepath.Join(dir, "rs.service")
		os.WriteFile(moved, []byte(strings.ReplaceAll(string(b), "/usr/local/bin/", binDir+"/")), 0o644)
		out, err := exec.Command("systemd-analyze", "verify", moved).CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	}

	// Run it as systemd would.
	os.MkdirAll(dir+"/etc", 0o755)
	os.Mkdir(dir+"/run", 0o700) // RuntimeDirectory=rs, RuntimeDirectoryMode=0700
	os.WriteFile(dir+"/etc/system.toml", []byte(fmt.Sprintf(`
[service.kv]
binary = %q
args = ["--listen", %q]
`, bin("kv"), freeAddr(t))), 0o644)
	wd, err := time.ParseDuration(keys["WatchdogSec"][0])
	if err != nil {
		t.Fatalf("WatchdogSec: %v", err)
	}
	n := listenNotify(t, filepath.Join(dir, "notify"))
	argv := strings.Fields(movePaths(keys["ExecStart"][0], dirs))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+n.addr, fmt.Sprintf("WATCHDOG_USEC=%d", wd.Microseconds()))
	var log syncBuffer
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("rs log:\n%s", log.String())
		}
	})
	ready := n.next(t, "READY=1", nil)
	if !strings.Contains(ready, "STATUS=1 running") {
		t.Errorf("READY=1 message %q: want kv running", ready)
	}
	reload := strings.Fields(movePaths(keys["ExecReload"][0], dirs))
	out, err := exec.Command(reload[0], reload[1:]...).CombinedOutput()
	switch {
	case err == nil:
	case bytes.Contains(out, []byte("unknown command")):
		// `service reload` comes with the reload part of issue 13.
		t.Logf("ExecReload: this service has no reload command yet: %s", bytes.TrimSpace(out))
	default:
		t.Errorf("ExecReload %v: %v: %s", reload, err, out)
	}
	cmd.Process.Signal(syscall.SIGTERM) // KillSignal
	n.next(t, "STOPPING=1", nil)
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("rs did not exit on SIGTERM")
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("rs exited %d, want 0", code)
	}
}

// dockerfile is examples/Dockerfile, parsed: its stages, each with its
// base and instructions.
type dockerStage struct {
	from, name string
	ins        [][2]string // instruction, rest of the line
}

func parseDockerfile(t *testing.T, path string) []*dockerStage {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages []*dockerStage
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		for strings.HasSuffix(line, "\\") && sc.Scan() {
			line = strings.TrimSuffix(line, "\\") + " " + strings.TrimSpace(sc.Text())
		}
		ins, rest, _ := strings.Cut(line, " ")
		ins = strings.ToUpper(ins)
		if ins == "FROM" {
			f := strings.Fields(rest)
			st := &dockerStage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			t.Fatalf("%s: %s before FROM", path, ins)
		}
		st := stages[len(stages)-1]
		st.ins = append(st.ins, [2]string{ins, strings.TrimSpace(rest)})
	}
	return stages
}

// examples/Dockerfile: a golang build stage and a small final image; the
// build stage's `go build` builds (run here, with its output moved to
// the test's directory), every COPY source exists (in the repository or
// in that output), and the final image's ENTRYPOINT, run with the
// image's paths moved, starts the services of the image's config and
// answers /healthz at --metrics; SIGTERM (STOPSIGNAL) stops it with exit
// 0. With a docker daemon and RS_DOCKER_BUILD=1 the image is built too.
func TestDockerfile(t *testing.T) {
	root, _ := filepath.Abs("..")
	stages := parseDockerfile(t, filepath.Join(root, "examples", "Dockerfile"))
	if len(stages) != 2 || !strings.HasPrefix(stages[0].from, "golang:") || stages[0].name == "" {
		t.Fatalf("want two stages, the first FROM golang:... AS name: %+v", stages)
	}
	build, final := stages[0], stages[1]
	if !strings.Contains(final.from, "slim") && !strings.Contains(final.from, "distroless") {
		t.Errorf("final image %s: want a small one (slim, distroless)", final.from)
	}
	out := t.TempDir()
	var entry []string
	var stop string
	for _, st := range stages {
		for _, in := range st.ins {
			switch in[0] {
			case "COPY":
				args := strings.Fields(in[1])
				from := ""
				if v, ok := strings.CutPrefix(args[0], "--from="); ok {
					from, args = v, args[1:]
				}
				for _, src := range args[:len(args)-1] {
					switch {
					case from == build.name:
						// Checked once the build ran.
					case from != "":
						t.Errorf("COPY --from=%s: no such stage", from)
					case src == ".":
					default:
						if _, err := os.Stat(filepath.Join(root, src)); err != nil {
							t.Errorf("COPY %s: not in the repository: %v", src, err)
						}
					}
				}
			case "RUN":
				if st == build && strings.Contains(in[1], "go build") {
					cmd := exec.Command("sh", "-c", strings.ReplaceAll(in[1], "/out/", out+"/"))
					cmd.Dir = root
					if b, err := cmd.CombinedOutput(); err != nil {
						t.Fatalf("RUN %s: %v\n%s", in[1], err, b)
					}
				}
			case "ENTRYPOINT":
				if st == final && json.Unmarshal([]byte(in[1]), &entry) != nil {
					t.Fatalf("ENTRYPOINT %s: want the exec (JSON) form, so that rs is PID 1", in[1])
				}
			case "STOPSIGNAL":
				stop = in[1]
			}
		}
	}
	if stop != "SIGTERM" {
		t.Errorf("STOPSIGNAL %q, want SIGTERM", stop)
	}
	// What the final stage copies from the build.
	for _, in := range final.ins {
		if in[0] == "COPY" && strings.HasPrefix(in[1], "--from=") {
			args := strings.Fields(in[1])[1:]
			for _, src := range args[:len(args)-1] {
				if _, err := os.Stat(strings.Replace(src, "/out/", out+"/", 1)); err != nil {
					t.Errorf("COPY --from=%s %s: the build made no such file", build.name, src)
				}
			}
		}
	}
	if len(entry) == 0 || entry[0] != "/usr/local/bin/rs" {
		t.Fatalf("ENTRYPOINT %v: want /usr/local/bin/rs ...", entry)
	}
	metrics := ""
	for i, a := range entry {
		if a == "--metrics" && i+1 < len(entry) {
			metrics = entry[i+1]
		}
	}
	if !strings.HasSuffix(metrics, ":9090") {
		t.Errorf("ENTRYPOINT --metrics %q: examples/k8s/pod.yaml probes port 9090", metrics)
	}

	// The entrypoint, with the image's paths and ports moved.
	dir := t.TempDir()
	cfg, err := os.ReadFile(filepath.Join(root, "examples", "container.toml"))
	if err != nil {
		t.Fatal(err)
	}
	kvAddr, metricsAddr := freeAddr(t), freeAddr(t)
	cfg = []byte(strings.ReplaceAll(strings.ReplaceAll(string(cfg), "/usr/local/bin/", out+"/"), "0.0.0.0:7070", kvAddr))
	os.WriteFile(filepath.Join(dir, "system.toml"), cfg, 0o644)
	var argv []string
	for _, a := range entry {
		a = movePaths(a, map[string]string{"/usr/local/bin/": out + "/", "/etc/rs/": dir + "/", "/var/log/rs": dir + "/log"})
		argv = append(argv, strings.Replace(a, "0.0.0.0:9090", metricsAddr, 1))
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "RS_SOCKET="+filepath.Join(dir, "rs.sock"))
	var log syncBuffer
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("rs log:\n%s", log.String())
		}
	})
	deadline := time.Now().Add(waitTimeout)
	for {
		select {
		case <-done:
			if strings.Contains(log.String(), "flag provided but not defined: -metrics") {
				// --metrics comes with the metrics part of issue 13.
				t.Skipf("this rs has no --metrics yet: the ENTRYPOINT cannot run (%s)", strings.TrimSpace(log.String()))
			}
			t.Fatalf("the ENTRYPOINT exited: %v", cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the ENTRYPOINT's kv does not answer")
		}
		if c, err := net.DialTimeout("tcp", kvAddr, time.Second); err == nil {
			c.Close()
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	resp, err := http.Get("http://" + metricsAddr + "/healthz")
	if err != nil {
		t.Fatalf("/healthz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %s", resp.Status)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("rs did not exit on SIGTERM")
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("rs exited %d, want 0", code)
	}

	if os.Getenv("RS_DOCKER_BUILD") == "" {
		t.Log("docker build not run (slow): set RS_DOCKER_BUILD=1 where a docker daemon runs")
		return
	}
	if err := exec.Command("docker", "info").Run(); err != nil {
		t.Skipf("RS_DOCKER_BUILD=1, but no docker daemon answers: %v", err)
	}
	if b, err := exec.Command("docker", "build", "-f", filepath.Join(root, "examples", "Dockerfile"), "-t", "rs-kv:test", root).CombinedOutput(); err != nil {
		t.Errorf("docker build: %v\n%s", err, b)
	}
}

// examples/k8s/pod.yaml: kubectl decodes it into a v1 Pod offline
// (`kubectl set image --local` to another image, the typed decoder, which drops what a
// Pod has no field for) and every field of the file survives that
// (against `kubectl label --local`, which keeps every field): no
// misspelt key. Its liveness probe is an httpGet of /healthz on the port
// the image's rs serves --metrics at.
func TestK8sPod(t *testing.T) {
	pod := filepath.Join("..", "examples", "k8s", "pod.yaml")
	if _, err := exec.LookPath("kubectl"); err != nil {
		t.Skip("no kubectl here: examples/k8s/pod.yaml is not validated")
	}
	kubectl := func(args ...string) map[string]any {
		t.Helper()
		cmd := exec.Command("kubectl", args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		b, err := cmd.Output()
		if err != nil {
			t.Fatalf("kubectl %v: %v\n%s", args, err, stderr.String())
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("kubectl %v: %v", args, err)
		}
		return v
	}
	typed := kubectl("set", "image", "--local", "-f", pod, "rs=rs-kv:validated", "-o", "json")
	raw := kubectl("label", "--local", "-f", pod, "validated=yes", "-o", "json")
	var lost []string
	var walk func(path string, a, b any)
	walk = func(path string, a, b any) {
		switch a := a.(type) {
		case map[string]any:
			bm, _ := b.(map[string]any)
			for k, v := range a {
				if path == ".metadata.labels" && k == "validated" {
					continue
				}
				bv, ok := bm[k]
				if !ok {
					lost = append(lost, path+"."+k)
					continue
				}
				walk(path+"."+k, v, bv)
			}
		case []any:
			bl, _ := b.([]any)
			for i, v := range a {
				if i >= len(bl) {
					lost = append(lost, fmt.Sprintf("%s[%d]", path, i))
					continue
				}
				walk(fmt.Sprintf("%s[%d]", path, i), v, bl[i])
			}
		}
	}
	walk("", raw, typed)
	if len(lost) > 0 {
		slices.Sort(lost)
		t.Errorf("fields a v1 Pod does not have (misspelt?): %v", lost)
	}
	if typed["kind"] != "Pod" {
		t.Fatalf("kind %v", typed["kind"])
	}
	var c map[string]any
	for _, x := range typed["spec"].(map[string]any)["containers"].([]any) {
		if m := x.(map[string]any); m["name"] == "rs" {
			c = m
		}
	}
	if c == nil {
		t.Fatal("no container named rs")
	}
	get, _ := c["livenessProbe"].(map[string]any)["httpGet"].(map[string]any)
	if get == nil || get["path"] != "/healthz" {
		t.Fatalf("livenessProbe: want httpGet of /healthz: %v", c["livenessProbe"])
	}
	port := get["port"]
	if name, ok := port.(string); ok {
		port = nil
		for _, p := range c["ports"].([]any) {
			if p := p.(map[string]any); p["name"] == name {
				port = p["containerPort"]
			}
		}
	}
	if port != float64(9090) {
		t.Errorf("livenessProbe port %v: the image's rs serves /healthz at --metrics 0.0.0.0:9090", get["port"])
	}
}
