package tests

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// needsLogCapture skips a test when rs does not capture its services'
// output yet (no --log-dir).
func needsLogCapture(t *testing.T) {
	t.Helper()
	out, _ := exec.Command(bin("rs"), "--help").CombinedOutput()
	if !strings.Contains(string(out), "--log-dir") {
		t.Skip("needs log capture (issue 11 core)")
	}
}

// One `service logs -f` shows the lines of three successive instances of
// a service: the first, the one rs starts after SIGKILL of it, and the
// one a live update starts; and `service logs` shows the last lines
// labelled when no label is given.
func TestLogsFollowAcrossInstances(t *testing.T) {
	needsLogCapture(t)
	r := startRS(t, `
[service.say]
binary = "$BIN/roles"
args = ["-role", "say"]
`, "--log-dir", "$DIR/logs")
	first := r.waitState("say", control.StateRunning, 0)
	outLine := func(pid int) *regexp.Regexp {
		return regexp.MustCompile(fmt.Sprintf(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z out say out pid=%d$`, pid))
	}
	// The first instance's line is in the file: the follow begins with it.
	r.waitFor("the first line in the log", func() bool {
		out, _, _ := r.service("logs", "-n", "2", "say")
		return strings.Contains(out, fmt.Sprintf("pid=%d", first.Pid))
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	follow := exec.CommandContext(ctx, bin("service"), "--socket", r.sock, "logs", "-f", "-n", "2", "say")
	stdout, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer follow.Wait()
	defer follow.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	// next waits for a line that matches re, skipping the err lines.
	next := func(re *regexp.Regexp) {
		t.Helper()
		timeout := time.After(waitTimeout)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the follow ended before %v", re)
				}
				if re.MatchString(l) {
					return
				}
				if !strings.Contains(l, " err say err pid=") {
					t.Fatalf("unexpected line %q waiting for %v", l, re)
				}
			case <-timeout:
				t.Fatalf("no line matching %v", re)
			}
		}
	}
	next(outLine(first.Pid))

	syscall.Kill(first.Pid, syscall.SIGKILL)
	second := r.waitState("say", control.StateRunning, first.Pid)
	next(outLine(second.Pid))

	r.mustService("update", "say")
	third := r.waitState("say", control.StateRunning, second.Pid)
	next(outLine(third.Pid))

	out := r.mustService("logs", "-n", "1")
	if !regexp.MustCompile(`^say \| \S+ (out|err) say (out|err) pid=\d+\n$`).MatchString(out) {
		t.Errorf("logs of every service: %q", out)
	}
}
