package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/reincarnation/rs/sef"
)

// opsRole: the test services of rs under systemd and as PID 1.
func opsRole(role string, args []string) int {
	switch role {
	case "gate-init": // its init succeeds once someone opens the fifo args[0] for writing
		s, err := sef.Startup(context.Background(), sef.Callbacks{InitFresh: func(*sef.Service, sef.Init) error {
			f, err := os.Open(args[0]) // blocks until the writer comes
			if err != nil {
				return err
			}
			return f.Close()
		}})
		if err != nil {
			return 1
		}
		return serveForever(s)
	case "env-dump": // writes its environment, one variable a line, to args[0]; then serves
		if err := writeAtomic(args[0], strings.Join(os.Environ(), "\n")+"\n"); err != nil {
			return 1
		}
		s, err := sef.Startup(context.Background(), sef.Callbacks{})
		if err != nil {
			return 1
		}
		return serveForever(s)
	case "orphaner": // (type simple) starts orphan-mid args..., waits for it, then waits for SIGTERM: exit 0
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		self, _ := os.Executable()
		if err := exec.Command(self, append([]string{"-role", "orphan-mid"}, args...)...).Run(); err != nil {
			fmt.Fprintln(os.Stderr, "orphan-mid:", err)
			return 1
		}
		<-term
		return 0
	case "orphan-mid": // starts orphan-leaf args... and exits at once: the leaf is an orphan
		self, _ := os.Executable()
		leaf := exec.Command(self, append([]string{"-role", "orphan-leaf"}, args...)...)
		if err := leaf.Start(); err != nil {
			return 1
		}
		return 0
	case "orphan-leaf": // exits once someone opens the fifo args[0] for writing
		f, err := os.Open(args[0])
		if err != nil {
			return 1
		}
		f.Close()
		return 0
	}
	return 2
}
