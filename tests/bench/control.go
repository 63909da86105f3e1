package main

// The control scenario: the status round trip on rs's control socket,
// by control.Client in this process and by the whole `bin/service status`
// command (exec, connect, request, print).

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

const (
	controlRuns = 200
	commandRuns = 30
)

// control times status on the main rs.
func (b *bench) control() error {
	api, err := clientStatus(b.ctl, controlRuns)
	if err != nil {
		return err
	}
	cmd, err := b.serviceStatus(b.ctl.Socket, commandRuns, false)
	if err != nil {
		return err
	}
	st, _ := b.ctl.Do(control.Request{Op: control.OpStatus}, nil)
	apiRow := row{name: "control: control.Client status round trip", d: api}
	cmdRow := row{name: "control: bin/service status (whole command)", d: cmd}
	b.rows = append(b.rows, apiRow, cmdRow)
	t := table{title: fmt.Sprintf("Control round trip (status, %d services in rs)", len(st.Services)),
		head: []string{"what", "median (min–max)", "p99", "n"}}
	for _, r := range []row{apiRow, cmdRow} {
		t.add(r.name, medRange(r.d), short(quantile(sorted(r.d), 0.99)), fmt.Sprint(len(r.d)))
	}
	b.sections = append(b.sections, t)
	return nil
}

// clientStatus times n status requests through c.
func clientStatus(c control.Client, n int) ([]time.Duration, error) {
	var d []time.Duration
	for range n {
		t := time.Now()
		if _, err := c.Do(control.Request{Op: control.OpStatus}, nil); err != nil {
			return d, fmt.Errorf("status: %w", err)
		}
		d = append(d, time.Since(t))
	}
	return d, nil
}

// serviceStatus times n runs of bin/service status [--json].
func (b *bench) serviceStatus(socket string, n int, json bool) ([]time.Duration, error) {
	args := []string{"--socket", socket, "status"}
	if json {
		args = append(args, "--json")
	}
	var d []time.Duration
	for range n {
		ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
		t := time.Now()
		out, err := exec.CommandContext(ctx, filepath.Join(b.bin, "service"), args...).CombinedOutput()
		took := time.Since(t)
		cancel()
		if err != nil {
			return d, fmt.Errorf("service %v: %v: %s", args, err, firstLine(string(out)))
		}
		d = append(d, took)
	}
	return d, nil
}
