// Command rs is the reincarnation server: it starts the configured
// services, pings them, reincarnates them when they crash or hang, and
// takes commands from `service` on its control socket.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/reincarnation/rs/proc"
	"github.com/reincarnation/rs/rs"
	"github.com/reincarnation/rs/rs/control"
	"github.com/reincarnation/rs/rs/logs"
	"github.com/reincarnation/rs/rs/metrics"
)

// The main goroutine stays on the main thread, which serves every fork
// and the exec of update-self (proc.Main): children die with the thread
// that forked them (PDEATHSIG), and an exec keeps only the thread that
// calls it.
func init() { runtime.LockOSThread() }

func main() {
	// `rs --check-table FD`: the check an rs runs a new binary through
	// before it execs it in place (update-self).
	if len(os.Args) == 3 && os.Args[1] == "--check-table" {
		if err := rs.CheckTable(os.Args[2], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "rs --check-table:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	proc.Main(rsMain)
}

func rsMain() {
	app := &cli.App{
		Name:      "rs",
		Usage:     "reincarnation server: supervise sef services",
		UsageText: "rs [--config FILE] [--socket PATH] [--log-dir DIR] [--log-file FILE] [--log-format text|json] [--log-level L] [--metrics ADDR]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Usage: "TOML file of services to start; read again at SIGHUP and `service reload`"},
			&cli.StringFlag{Name: "socket", Usage: "control socket (default: $RS_SOCKET, else rs.sock in rs's private directory, mode 0700: " +
				"$XDG_RUNTIME_DIR/rs, else /run/rs for root, else $TMPDIR/rs-<uid>; here " + control.DefaultSocket() + ")"},
			&cli.StringFlag{Name: "log-dir", Usage: "where services with log = \"file\" write <label>.log (default: /var/log/rs for root, " +
				"else $XDG_STATE_HOME/rs/log, else ~/.local/state/rs/log; here " + logs.DefaultDir() + ")"},
			&cli.StringFlag{Name: "log-file", Usage: "rs's own log goes to this file (appended; reopened on SIGUSR1 and `service logs --reopen`) instead of its stderr"},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "text or json (rs's own log, on its stderr or --log-file)"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "metrics", Usage: "serve Prometheus metrics at http://ADDR/metrics and health at /healthz (ADDR host:port, e.g. 127.0.0.1:9100; port 0 takes a free one)"},
		},
		HideHelpCommand: true,
		Action:          run,
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "rs:", err)
		if errors.Is(err, errUnclean) {
			os.Exit(exitUnclean)
		}
		os.Exit(1)
	}
	os.Exit(0)
}

// rs's exit status: 0 when every service stopped cleanly at the end, 1
// when rs could not start or run (a bad flag, config or socket),
// exitUnclean when some service did not stop cleanly (rs.Server.Unclean:
// it needed SIGKILL, exited non-zero or by another signal than its
// stop_signal, or was failed); rs's log names each.
const exitUnclean = 2

var errUnclean = errors.New("not every service stopped cleanly")

func run(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", c.Args().First())
	}
	// rs's own log goes through a queue: a stderr that does not drain
	// must not stop the loop.
	handler, err := logHandler(c.String("log-format"), c.String("log-level"))
	if err != nil {
		return err
	}
	var own io.Writer = os.Stderr
	var reopenOwn func()
	if path := c.String("log-file"); path != "" {
		f, err := rs.OpenLogFile(path)
		if err != nil {
			return fmt.Errorf("--log-file: %w", err)
		}
		defer f.Close()
		own, reopenOwn = f, f.Reopen
	}
	out := rs.NewLogQueue(own, 4096)
	out.Notice = func(w io.Writer, n int64) {
		slog.New(handler(w)).Warn("rs log lines dropped: the output did not keep up", "lines", n)
	}
	defer out.Close(time.Second)
	log := slog.New(handler(out))
	// rs is one loop; more Ps only add wake-ups between its threads
	// across CPUs: at 1000 services rs used ~22% less CPU on one P
	// (BENCHMARKS.md). But while a service floods its log, the log
	// writer needs a CPU of its own, or rs's loop waits behind it: rs
	// takes a second P then and gives it back once the flood is over.
	// $GOMAXPROCS, when set, decides alone.
	var logBusy func(bool)
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
		if runtime.NumCPU() > 1 {
			logBusy = func(busy bool) {
				if busy {
					runtime.GOMAXPROCS(2)
				} else {
					runtime.GOMAXPROCS(1)
				}
			}
		}
	}
	// $RS_CPUPROFILE: write a pprof CPU profile of the whole run there.
	if path := os.Getenv("RS_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	slog.SetDefault(log)
	// An exec in place (update-self, or the re-exec after a panic): the
	// table of the rs before is adopted instead of the config.
	self := takeSelfEnv()
	execEnv := os.Environ() // before rs takes systemd's variables for itself
	var tbl *rs.Table
	if self.table != "" {
		if tbl, err = rs.ReadTable(self.table); err == nil {
			err = faultAdopt(self.rollback != "")
		}
		if err != nil {
			log.Error("update-self: cannot take the table; rolling back to the old binary", "err", err)
			out.Flush(time.Second)
			return rs.Rollback(err.Error(), os.Args[1:], self.table, self.old, self.rollback != "", tbl)
		}
	}
	var specs []rs.Spec
	if path := c.String("config"); path != "" && tbl == nil {
		if specs, err = rs.LoadConfig(path); err != nil {
			return err
		}
	}
	sock := c.String("socket")
	if sock == "" && os.Getenv("RS_SOCKET") == "" {
		// The default place: a directory of rs's own, so that no other
		// local user can take the socket's name first.
		if err := control.PrivateDir(control.RuntimeDir()); err != nil {
			return err
		}
	}
	if sock == "" {
		sock = control.DefaultSocket()
	}
	var ln *net.UnixListener
	if fd, ok := tbl.CarriedFD("control"); ok {
		ln, err = inheritUnix(fd)
	} else {
		ln, err = control.Listen(sock)
	}
	if err != nil {
		return err
	}
	defer os.Remove(sock)
	defer ln.Close()

	// Signals before the first child, so none is missed.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	reopen := make(chan os.Signal, 1)
	signal.Notify(reopen, syscall.SIGUSR1)
	// SIGHUP rereads the config file: one reload at a time, a SIGHUP
	// that comes meanwhile makes one more (the channel holds one).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	signal.Ignore(syscall.SIGPIPE)

	// Orphans of the services are reparented to rs, PID 1 of a container
	// or not, and reaped off the loop (proc/reaper.go).
	if err := proc.SetSubreaper(); err != nil {
		log.Warn("not a subreaper: orphans of the services go to PID 1", "err", err)
	}

	// Before the first service: the cgroups an rs that was SIGKILLed left
	// behind are emptied here.
	proc.InitContainment(log)
	defer proc.ReleaseContainment()
	logDir := c.String("log-dir")
	if logDir == "" {
		logDir = logs.DefaultDir()
	}
	if logDir, err = filepath.Abs(logDir); err != nil {
		return err
	}
	// Before rs.New takes the environment the services get.
	sd := takeSystemdEnv(log)
	defer sd.close()
	carry := map[string]int{"control": rawFD(ln)}
	opts := rs.Options{Logger: log, LogDir: logDir, LogBusy: logBusy, Reopen: reopenOwn, ConfigFile: c.String("config"),
		Args: os.Args[1:], Carry: carry, FlushLog: func() { out.Flush(time.Second) }, ExecEnv: execEnv}
	srv := rs.New(opts)
	if tbl != nil {
		// Before the orphan reaper, which would reap the services.
		if _, err := srv.Adopt(tbl, self.rollback); err != nil {
			log.Error("update-self: cannot adopt the table; rolling back to the old binary", "err", err)
			out.Flush(time.Second)
			return rs.Rollback(err.Error(), os.Args[1:], self.table, self.old, self.rollback != "", tbl)
		}
		self.close()
	}
	reaper := proc.NewReaper(log)
	defer reaper.Stop()
	ctl := &control.Server{Handler: srv.Handle, Stream: srv.HandleStream, Log: log}
	var met *metrics.Server
	if addr := c.String("metrics"); addr != "" {
		// Bound before the loop runs: an address taken is an error at start.
		if fd, ok := tbl.CarriedFD("metrics"); ok {
			met, err = inheritMetrics(fd, srv, log)
		} else {
			met, err = listenMetrics(addr, srv, log)
		}
		if err != nil {
			return fmt.Errorf("--metrics: %w", err)
		}
		carry["metrics"] = met.FD()
	}
	faultHooks(srv)
	go srv.Run()
	go ctl.Serve(ln)
	if met != nil {
		// Before Start: the collector sees every service's first events.
		if w := srv.Watch(true); w != nil {
			met.Collector().Follow(w.C)
		}
		met.Serve()
		defer met.Close()
		log.Info("metrics listening", "addr", met.Addr().String())
	}
	log.Info("rs started", "socket", sock, "services", len(specs), "pid", os.Getpid(), "log_dir", logDir, "adopted", tbl != nil)
	if tbl == nil {
		srv.Start(specs)
	}
	go func() {
		// Off the loop: the reload reads the file in this goroutine, and
		// logs each service's outcome itself.
		for range hup {
			log.Info("SIGHUP: reloading the config file", "config", c.String("config"))
			if r := srv.Do(control.Request{Op: control.OpReload}, nil); r.Err != "" {
				log.Error("SIGHUP: reload failed", "err", r.Err)
			}
		}
	}()
	labels := make([]string, len(specs))
	for i, sp := range specs {
		labels[i] = sp.Label
	}
	sd.start(srv, labels)
wait:
	for {
		select {
		case <-reopen:
			log.Info("SIGUSR1: reopening log files")
			srv.ReopenLogs()
		case sig := <-sigs:
			log.Info("signal, stopping every service", "signal", sig.String())
			sd.shuttingDown(sig.String())
			srv.Shutdown()
			break wait
		case <-srv.Done():
			break wait
		}
	}
	sd.shuttingDown("done") // after `service shutdown`: late, but said
	ln.Close()
	ctl.Wait(time.Second)
	if bad := srv.Unclean(); len(bad) > 0 {
		for _, b := range bad {
			label, why, _ := strings.Cut(b, ": ")
			log.Warn("not stopped cleanly", "label", label, "why", why)
		}
		log.Info("rs stopped", "exit", exitUnclean)
		return fmt.Errorf("%w: %d of them", errUnclean, len(bad))
	}
	log.Info("rs stopped")
	return nil
}

// logHandler returns a maker of rs's log handler on a writer.
func logHandler(format, level string) (func(io.Writer) slog.Handler, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, opts) }, nil
	case "json":
		return func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, opts) }, nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
