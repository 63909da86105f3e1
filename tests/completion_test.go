package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// complete runs `service --socket S args... --generate-bash-completion`
// (with env added) and returns the words it offers.
func complete(t *testing.T, sock string, env []string, args ...string) []string {
	t.Helper()
	cmd := exec.Command(bin("service"), append(append([]string{"--socket", sock}, args...), "--generate-bash-completion")...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("service %v --generate-bash-completion: %v", args, err)
	}
	return strings.Fields(string(out))
}

func wantWords(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("%s: %q not offered in %q", what, w, got)
		}
	}
}

// Completion of service: the commands, a command's flags, rs's labels
// (as rs has them now) where a command takes one, signal names then
// labels for signal; in zsh each with its description. The bash script
// of `service completion bash`, run by bash, fills COMPREPLY from that.
func TestCompletion(t *testing.T) {
	r := startRS(t, `
[service.alpha]
binary = "$BIN/roles"
args = ["-role", "plain"]

[service.beta]
binary = "$BIN/roles"
args = ["-role", "plain"]
`)
	r.waitState("alpha", "running", 0)
	r.waitState("beta", "running", 0)
	cmds := complete(t, r.sock, nil)
	wantWords(t, "service <TAB>", cmds, "up", "down", "restart", "update", "status", "logs", "signal", "shutdown", "completion")
	if slices.Contains(cmds, "alpha") {
		t.Errorf("service <TAB> offers a label: %q", cmds)
	}
	for _, c := range []string{"status", "down", "restart", "update", "logs"} {
		got := complete(t, r.sock, nil, c)
		if !slices.Equal(got, []string{"alpha", "beta"}) {
			t.Errorf("service %s <TAB>: %q, want the labels", c, got)
		}
	}
	if got := complete(t, r.sock, nil, "down", "alpha"); len(got) != 0 {
		t.Errorf("service down alpha <TAB>: %q, want nothing (one label)", got)
	}
	wantWords(t, "service signal <TAB>", complete(t, r.sock, nil, "signal"), "SIGHUP", "SIGTERM")
	if got := complete(t, r.sock, nil, "signal", "SIGHUP"); !slices.Equal(got, []string{"alpha", "beta"}) {
		t.Errorf("service signal SIGHUP <TAB>: %q, want the labels", got)
	}
	wantWords(t, "service status --j<TAB>", complete(t, r.sock, nil, "status", "--j"), "--json")
	wantWords(t, "service completion <TAB>", complete(t, r.sock, nil, "completion"), "bash", "zsh")
	wantWords(t, "zsh: service status <TAB>", complete(t, r.sock, []string{"0=zsh"}, "status"), "alpha:running", "beta:running")
	if got := complete(t, filepath.Join(t.TempDir(), "none.sock"), nil, "status"); len(got) != 0 {
		t.Errorf("no rs: %q, want nothing", got)
	}

	// The scripts.
	for _, sh := range []string{"bash", "zsh"} {
		out := r.mustService("completion", sh)
		if !strings.Contains(out, "--generate-bash-completion") || !strings.Contains(out, bin("service")) {
			t.Errorf("completion %s: not a script that runs this service:\n%s", sh, out)
		}
	}
	if _, err := exec.LookPath("zsh"); err != nil {
		t.Log("no zsh here: the zsh script is not run")
	}
	script := filepath.Join(t.TempDir(), "service.bash")
	os.WriteFile(script, []byte(r.mustService("completion", "bash")), 0o644)
	for _, c := range []struct {
		words string // COMP_WORDS, the last being the word under the cursor
		want  string
	}{
		{`service --socket "$SOCK" st`, "status"},
		{`service --socket "$SOCK" status ""`, "alpha beta"},
		{`service --socket "$SOCK" restart b`, "beta"},
		{`service --socket "$SOCK" status --j`, "--json"},
	} {
		cmd := exec.Command("bash", "-c", `source "$1"; COMP_WORDS=(`+c.words+`); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _service_complete; echo "${COMPREPLY[*]}"`, "bash", script)
		cmd.Env = append(os.Environ(), "SOCK="+r.sock)
		out, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != c.want {
			t.Errorf("bash, COMP_WORDS=(%s): %q (%v), want %q", c.words, out, err, c.want)
		}
	}
}
