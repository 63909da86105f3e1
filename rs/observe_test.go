package rs

import (
	"testing"

	"github.com/reincarnation/rs/rs/control"
)

// emit never waits: a watcher that does not read misses events, and the
// next one it gets says how many; label filters and pongs go only where
// asked for.
func TestEmitMissesRatherThanWaits(t *testing.T) {
	s := &Server{watchers: map[*Watcher]struct{}{}, services: map[string]*service{}}
	add := func(label string, pings bool) *Watcher {
		ch := make(chan control.Event, watcherBuffer)
		w := &Watcher{C: ch, s: s, ch: ch, label: label, pings: pings}
		s.watchers[w] = struct{}{}
		return w
	}
	all, one, pinged := add("", false), add("b", false), add("", true)
	for i := 0; i < watcherBuffer+5; i++ {
		s.emit(control.Event{Label: "a", Event: EventReady})
	}
	s.emit(control.Event{Label: "b", Event: EventPong})
	if len(all.ch) != watcherBuffer || len(one.ch) != 0 || len(pinged.ch) != watcherBuffer {
		t.Fatalf("queued: all %d, b %d, pinged %d", len(all.ch), len(one.ch), len(pinged.ch))
	}
	for range watcherBuffer {
		<-all.ch
		<-pinged.ch
	}
	s.emit(control.Event{Label: "b", Event: EventExited, Reason: "no-heartbeat: ping 3 unanswered"})
	got := <-all.ch
	if got.Missed != 5 || got.Kind != "no-heartbeat" || got.Time.IsZero() {
		t.Errorf("after 5 missed: %+v", got)
	}
	if got := <-one.ch; got.Event != EventExited || got.Missed != 0 {
		t.Errorf("b's watcher: %+v", got)
	}
	if got := <-pinged.ch; got.Missed != 6 { // 5 readies and the pong it had no room for
		t.Errorf("pinged watcher: %+v", got)
	}
}
