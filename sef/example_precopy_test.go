package sef_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"github.com/reincarnation/rs/sef"
	"github.com/reincarnation/rs/sef/seftest"
)

// A map that moves to the new instance with a pre-copy, tested with the
// fake rs: the old instance streams its entries one per step while its
// main loop serves writes, records the keys written meanwhile, and saves
// only those at the quiescent point; the new instance loads the base
// before its init and applies the delta.
func Example_preCopy() {
	ctx := context.Background()
	quiet := sef.WithLogger(slog.New(slog.DiscardHandler))
	type store struct {
		m     map[string]string
		dirty map[string]bool // keys written since the base began; nil outside one
	}
	newStore := func(st *store, started chan<- struct{}, writesDone <-chan struct{}) sef.Callbacks {
		return sef.Callbacks{
			LUBaseStart: func(*sef.Service, int) (sef.BaseStep, error) {
				st.dirty = map[string]bool{}
				keys := slices.Sorted(maps.Keys(st.m))
				close(started)
				return func(w io.Writer) (bool, error) {
					if len(keys) == 0 {
						select {
						case <-writesDone: // (for a deterministic example)
							return true, nil
						default:
							return false, nil // asked again at the next wake-up
						}
					}
					k := keys[0]
					keys = keys[1:]
					_, err := fmt.Fprintf(w, "%s=%s\n", k, st.m[k])
					return false, err
				}, nil
			},
			LUBaseLoad: func(_ *sef.Service, r io.Reader) error {
				st.m = map[string]string{}
				sc := bufio.NewScanner(r)
				for sc.Scan() {
					k, v, _ := strings.Cut(sc.Text(), "=")
					st.m[k] = v
				}
				return sc.Err()
			},
			LUStateChanged: func(_ *sef.Service, _, state int) {
				if state == 0 {
					st.dirty = nil // rolled back: drop the record
				}
			},
			LUStateSave: func(_ *sef.Service, w *sef.StateWriter) error {
				for k := range st.dirty { // w.Delta() is true here
					v, ok := st.m[k]
					if !ok {
						v = "\x00" // deleted
					}
					fmt.Fprintf(w, "%s=%s\n", k, v)
				}
				return nil
			},
			InitLiveUpdate: func(_ *sef.Service, in sef.Init) error {
				sc := bufio.NewScanner(in.State)
				for sc.Scan() {
					k, v, _ := strings.Cut(sc.Text(), "=")
					if v == "\x00" {
						delete(st.m, k)
					} else {
						st.m[k] = v
					}
				}
				fmt.Println("delta:", in.State.Delta)
				return sc.Err()
			},
		}
	}

	old := &store{m: map[string]string{"a": "1", "b": "2", "d": "4"}}
	started, writesDone := make(chan struct{}), make(chan struct{})
	s, rs, err := seftest.Start(ctx, seftest.Init{}, newStore(old, started, writesDone), quiet)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rs.Close()
	go func() { // the old instance's main loop: it serves writes during the base
		for {
			w, err := s.Receive(ctx)
			if err != nil {
				return
			}
			switch w := w.(type) {
			case [2]string:
				if w[1] == "" {
					delete(old.m, w[0])
				} else {
					old.m[w[0]] = w[1]
				}
				if old.dirty != nil {
					old.dirty[w[0]] = true
				}
			case string: // "done"
				close(writesDone)
			}
		}
	}()
	go func() { // clients writing while the base streams
		<-started
		for _, w := range []any{[2]string{"b", "20"}, [2]string{"a", ""}, [2]string{"c", "3"}, "done"} {
			s.Post(ctx, w)
		}
	}()
	saved, err := rs.PrepareBase(ctx, sef.StateWorkFree) // the base, then the delta
	if err != nil {
		fmt.Println(err)
		return
	}
	rs.Stop() // the commit stops the old instance

	restored := &store{}
	_, rs2, err := seftest.Start(ctx, seftest.Init{Type: sef.InitLiveUpdate, State: saved}, newStore(restored, nil, nil), quiet)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rs2.Close()
	fmt.Println("restored:", restored.m)
	// Output:
	// delta: true
	// restored: map[b:20 c:3 d:4]
}
