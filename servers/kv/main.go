package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"rs/sef"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:]))
}

// kv holds what the init callback sets up for main.
type kv struct {
	addr string
	ln   net.Listener
	in   sef.Init
	log  *slog.Logger
}

func run(args []string) int {
	fl := flag.NewFlagSet("kv", flag.ContinueOnError)
	listenAddr := fl.String("listen", "127.0.0.1:7070", "address to serve on: host:port or unix:/path")
	allowFaults := fl.Bool("allow-faults", false, "accept DEBUG FAULT (fault injection for tests)")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "kv: unexpected argument %q\n", fl.Arg(0))
		return 2
	}

	started := time.Now()
	k := &kv{addr: *listenAddr, log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	s, err := sef.Startup(sef.Callbacks{InitFresh: k.initialize, InitRestart: k.initialize})
	if err != nil {
		k.log.Error("start-up failed", "err", err)
		if k.ln != nil {
			k.ln.Close()
		}
		return 1
	}

	srv := newServer(s, k.ln, serverConfig{
		allowFaults: *allowFaults,
		standalone:  s.Standalone(),
		log:         k.log,
		meta: meta{
			version:  version,
			label:    k.in.Label,
			initType: initName(k.in.Type),
			restarts: k.in.Restarts,
			pid:      os.Getpid(),
			started:  started,
		},
	})
	err = srv.run()
	if errors.Is(err, sef.ErrStopped) {
		k.log.Info("stopped")
		return 0
	}
	k.log.Error("main loop failed", "err", err)
	return 1
}

// initialize is the init callback for fresh starts and restarts alike: take the
// listener back from rs's fd store if it is there (a restart, so no
// connection is refused meanwhile), else open it and store it.
func (k *kv) initialize(s *sef.Service, in sef.Init) error {
	k.in = in
	if in.Label != "" {
		k.log = k.log.With("label", in.Label)
	}
	var err error
	for name, f := range in.FDs {
		if name == listenerFD {
			continue
		}
		k.log.Warn("closing unknown fd from the fd store", "name", name)
		f.Close()
	}
	if f, ok := in.FDs[listenerFD]; ok {
		if k.ln, err = inheritListener(f); err != nil {
			return err
		}
		k.log.Info("listening", "addr", k.ln.Addr().String(), "inherited", true, "init", initName(in.Type), "restarts", in.Restarts)
		return nil
	}
	if k.ln, err = listen(k.addr); err != nil {
		return err
	}
	if !s.Standalone() {
		f, err := listenerFile(k.ln)
		if err == nil {
			err = s.StoreFD(listenerFD, f)
			f.Close() // rs has its own copy now
		}
		if err != nil {
			k.ln.Close()
			k.ln = nil
			return fmt.Errorf("store listener: %w", err)
		}
	}
	k.log.Info("listening", "addr", k.ln.Addr().String(), "inherited", false, "init", initName(in.Type), "standalone", s.Standalone())
	return nil
}

// initName spells an init type for logs and INFO.
func initName(t sef.InitType) string {
	switch t {
	case sef.InitFresh:
		return "fresh"
	case sef.InitRestart:
		return "restart"
	case sef.InitLiveUpdate:
		return "live-update"
	}
	return fmt.Sprintf("init(%d)", int(t))
}
