package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/reincarnation/rs/rs/control"
)

func eventsCommand() *cli.Command {
	return &cli.Command{
		Name: "events", Usage: "print lifecycle events as they happen (every service's without a label)", ArgsUsage: "[<label>]",
		Description: "One line per event: `<time> <label> <event> key=value ...` (spawned, ready, fault, exited,\n" +
			"stopped, reincarnating, backoff, failed, standby-takeover, update-started, update-committed,\n" +
			"update-rolled-back, reload steps, rs-stopped). With --json one object per line with at least\n" +
			"time, label and event. It goes on until interrupted or rs stops; across rs's update-self it\n" +
			"asks the new rs again (events while that one starts are not shown).",
		Flags:  []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "one JSON object per line"}},
		Action: events,
	}
}

func events(c *cli.Context) error {
	if c.NArg() > 1 {
		return fmt.Errorf("events: one label at most, got %d arguments", c.NArg())
	}
	req := control.Request{Op: control.OpEvents, Label: c.Args().First()}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	asJSON := c.Bool("json")
	enc := json.NewEncoder(w)
	// Asked again after rs closed the connection (update-self): what
	// happened in between is not sent again, and the note says so.
	r, err := streamResumed(ctx, client(c), "events (those while rs did not answer are not shown)", req, nil, func(r control.Reply) error {
		for _, ev := range r.Events {
			if asJSON {
				if err := enc.Encode(ev); err != nil {
					return err
				}
				continue
			}
			writeEvent(w, ev)
		}
		return w.Flush()
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	if err == nil && r.Message != "" && !asJSON {
		fmt.Fprintln(os.Stderr, "service: events:", escape(r.Message))
	}
	return err
}

// writeEvent prints one event as a line: time, label, event, then the
// fields it has as key=value, values quoted when they hold a space and
// escaped (they can hold a service's words).
func writeEvent(w io.Writer, ev control.Event) {
	label := ev.Label
	if label == "" {
		label = "-"
	}
	fmt.Fprintf(w, "%s %s %s", ev.Time.UTC().Format("2006-01-02T15:04:05.000000Z07:00"), escape(label), escape(ev.Event))
	field := func(k, v string) {
		if v == "" {
			return
		}
		v = escape(v)
		for _, r := range v {
			if r == ' ' || r == '"' || r == '=' {
				v = strconv.Quote(v)
				break
			}
		}
		fmt.Fprintf(w, " %s=%s", k, v)
	}
	if ev.Pid != 0 {
		field("pid", strconv.Itoa(ev.Pid))
	}
	field("state", ev.State)
	field("reason", ev.Reason)
	field("detail", ev.Detail)
	if ev.Label != "" {
		field("restarts", strconv.Itoa(ev.Restarts))
	}
	if ev.Missed > 0 {
		field("missed", strconv.Itoa(ev.Missed))
	}
	fmt.Fprintln(w)
}
