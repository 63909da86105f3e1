package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/reincarnation/rs/internal/sefdebug"
	"github.com/reincarnation/rs/sef"
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
	srv  *server // set once the main loop exists; the live-update callbacks use it

	// What a live update handed over, restored by initLiveUpdate.
	data  *store
	conns []restoredConn
	// Pre-copy: base is what LUBaseLoad built in the new version; snap
	// the old version's base being written.
	base *store
	snap *snapshot
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
	cb := sef.Callbacks{
		InitFresh:      k.initialize,
		InitRestart:    k.initialize,
		InitLiveUpdate: k.initLiveUpdate,
		LUStateChanged: func(_ *sef.Service, old, state int) {
			if old == 0 {
				k.srv.group.Begin()
			} else if state == 0 {
				k.srv.group.End()
				if k.snap != nil {
					k.snap.drop()
					k.snap = nil
				}
			}
		},
		LUBaseStart: func(s *sef.Service, _ int) (sef.BaseStep, error) {
			k.snap = startBase(k.srv.eng.data, s.Reached)
			return k.snap.step, nil
		},
		LUBaseLoad: func(_ *sef.Service, r io.Reader) (err error) {
			if luFault == "base" {
				return errors.New("refusing the base (built with luFault=base)")
			}
			k.base, err = loadBase(r)
			return err
		},
		LUPrepare:   func(*sef.Service, int) bool { return k.srv.handoffReady() },
		LUStateSave: func(_ *sef.Service, w *sef.StateWriter) error { return k.srv.saveState(w) },
	}
	if preCopy == "off" {
		cb.LUBaseStart, cb.LUBaseLoad = nil, nil
	}
	s, err := sef.Startup(context.Background(), cb, sef.WithLogger(k.log))
	if err != nil {
		k.log.Error("start-up failed", "err", err)
		if k.ln != nil {
			k.ln.Close()
		}
		return 1
	}

	srv := newServer(sefService{s}, k.ln, serverConfig{
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
	k.srv = srv
	if k.data != nil {
		srv.eng.data = k.data
		for _, rc := range k.conns {
			if hc := srv.group.Adopt(rc.c, nil); hc != nil && srv.track(hc) {
				go srv.serveFrom(hc, rc.buf, rc.p)
			}
		}
		k.log.Info("live update: state restored", "keys", k.data.len(), "connections", len(k.conns))
		k.data, k.conns = nil, nil
	}
	err = srv.run()
	if errors.Is(err, sef.ErrStopped) {
		k.log.Info("exiting after a graceful stop", "why", err)
		return 0
	}
	k.log.Error("main loop failed", "err", err)
	return 1
}

// initialize is the init callback for fresh starts and restarts alike:
// the listener rs holds for kv (so a restart refuses no connection), or
// a new one that sef stores in rs.
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
	if f, ok := in.FDs[listenerFD]; ok { // a `listen` socket of the config
		if k.ln, err = inheritListener(f); err != nil {
			return err
		}
		k.log.Info("listening", "addr", k.ln.Addr().String(), "from", "rs's listen socket", "init", initName(in.Type), "restarts", in.Restarts)
		return nil
	}
	if k.ln, err = listen(s, k.addr); err != nil {
		return err
	}
	k.log.Info("listening", "addr", k.ln.Addr().String(), "from", "sef.Listen", "init", initName(in.Type), "restarts", in.Restarts, "standalone", s.Standalone())
	return nil
}

// sefService is *sef.Service with the fault hooks of DEBUG FAULT, which
// sef keeps out of its public API.
type sefService struct{ *sef.Service }

func (s sefService) DebugGarbage() error      { return sefdebug.Garbage(s.Service) }
func (s sefService) DebugCloseChannel() error { return sefdebug.CloseChannel(s.Service) }

// initLiveUpdate is the new version's init: the listener as on a restart,
// then the old version's map and connections. Nothing reads a connection
// before init has succeeded, so a failure here leaves them untouched for
// the old version, which resumes.
func (k *kv) initLiveUpdate(s *sef.Service, in sef.Init) error {
	switch luFault {
	case "exit":
		os.Exit(1)
	case "hang":
		for {
			time.Sleep(time.Hour)
		}
	}
	if err := k.initialize(s, in); err != nil {
		return err
	}
	base := k.base
	k.base = nil
	if !in.State.Delta {
		base = nil // a whole state came
	}
	data, conns, err := loadStateOnto(in.State, in.State.FDs, base)
	if err == nil && luFault == "restore" {
		for _, rc := range conns {
			rc.c.Close()
		}
		err = errors.New("refusing the state (built with luFault=restore)")
	}
	if err != nil {
		k.ln.Close()
		k.ln = nil
		return fmt.Errorf("restore: %w", err)
	}
	k.data, k.conns = data, conns
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
