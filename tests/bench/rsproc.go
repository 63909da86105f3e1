package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// rsProc is an rs the bench started.
type rsProc struct {
	cmd     *exec.Cmd
	done    chan struct{}
	err     error // how it exited, once done is closed
	logPath string
	started time.Time
}

// startRS starts bin/rs on cfg and socket, logging to logPath, with env
// added to the bench's environment and flags added to its own.
func (b *bench) startRS(cfg, socket, logPath string, env []string, flags ...string) (*rsProc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(b.bin, "rs"), append([]string{"--config", cfg, "--socket", socket}, flags...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(withoutEnv(os.Environ(), "RS_CHANNEL_FD"), env...)
	// Its own process group: a ^C reaches only us, and we stop rs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &rsProc{cmd: cmd, done: make(chan struct{}), logPath: logPath, started: time.Now()}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() { p.err = cmd.Wait(); logf.Close(); close(p.done) }()
	return p, nil
}

func (p *rsProc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM and waits up to limit for rs to exit, then kills it.
func (p *rsProc) stop(limit time.Duration) error {
	select {
	case <-p.done:
		return fmt.Errorf("rs had exited before the bench stopped it (%v)%s", p.err, strangeSignals(p.logPath, time.Now()))
	default:
	}
	sent := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if s := strangeSignals(p.logPath, sent); s != "" {
			return fmt.Errorf("rs exited (%v)%s", p.err, s)
		}
		if p.err != nil {
			return fmt.Errorf("rs after SIGTERM: %v", p.err)
		}
		return nil
	case <-time.After(limit):
		p.cmd.Process.Kill()
		<-p.done
		return errors.New("rs did not exit within " + limit.String() + " of SIGTERM; killed it")
	}
}
