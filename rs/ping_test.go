package rs

import (
	"testing"
	"time"
)

// A thousand members spread evenly over the slots; the visits come one
// slot apart, each member once per period.
func TestPingGroupSpreads(t *testing.T) {
	start := time.Unix(1e9, 0)
	g := newPingGroup(time.Second)
	if len(g.slots) != pingSlots || g.slot != time.Second/pingSlots {
		t.Fatalf("%d slots of %v", len(g.slots), g.slot)
	}
	insts := make([]*instance, 1000)
	for i := range insts {
		insts[i] = &instance{}
		g.join(insts[i], start)
	}
	for i, m := range g.slots {
		if len(m) < 1000/pingSlots || len(m) > 1000/pingSlots+1 {
			t.Fatalf("slot %d has %d members", i, len(m))
		}
	}
	visits := map[*instance]int{}
	now := start
	for range 2 * pingSlots {
		if g.nextAt.Before(now) {
			t.Fatalf("next visit %v before the last %v", g.nextAt, now)
		}
		now = g.nextAt
		for inst := range g.visit(now) {
			visits[inst]++
		}
	}
	if got := now.Sub(start); got != 2*time.Second {
		t.Fatalf("two rounds of visits took %v, want 2s", got)
	}
	for _, inst := range insts {
		if visits[inst] != 2 {
			t.Fatalf("a member visited %d times in two periods", visits[inst])
		}
	}
}

// One member: one visit per period, none in between; a second member
// whose slot comes sooner moves the timer up.
func TestPingGroupSkipsEmptySlots(t *testing.T) {
	start := time.Unix(1e9, 0)
	g := newPingGroup(time.Second)
	a := &instance{}
	if !g.join(a, start) || !g.nextAt.Equal(start.Add(time.Second)) {
		t.Fatalf("first member: next visit %v", g.nextAt.Sub(start))
	}
	now := g.nextAt
	if due := g.visit(now); len(due) != 1 || !g.nextAt.Equal(now.Add(time.Second)) {
		t.Fatalf("visit: %d due, next in %v", len(due), g.nextAt.Sub(now))
	}
	b := &instance{}
	if !g.join(b, now.Add(time.Millisecond)) {
		t.Fatal("a member in a sooner slot did not move the timer")
	}
	if want := now.Add(g.slot); !g.nextAt.Equal(want) || g.next != b.pingSlot {
		t.Fatalf("next visit in %v at slot %d, want %v at slot %d", g.nextAt.Sub(now), g.next, g.slot, b.pingSlot)
	}
	if g.leave(b) || !g.leave(a) {
		t.Fatal("leave: wrong emptiness")
	}
}

// A short period has fewer slots, none under minPingSlot; a loop that
// fell behind starts again from now instead of catching up.
func TestPingGroupShortPeriodAndLag(t *testing.T) {
	if g := newPingGroup(3 * minPingSlot); len(g.slots) != min(3, pingSlots) || g.slot < minPingSlot {
		t.Fatalf("period %v: %d slots of %v", 3*minPingSlot, len(g.slots), g.slot)
	}
	if g := newPingGroup(5 * time.Millisecond); len(g.slots) != 1 {
		t.Fatalf("5ms: %d slots", len(g.slots))
	}
	start := time.Unix(1e9, 0)
	g := newPingGroup(time.Second)
	g.join(&instance{}, start)
	late := start.Add(10 * time.Second)
	g.visit(late)
	if !g.nextAt.Equal(late.Add(time.Second)) {
		t.Fatalf("after a 9s lag the next visit is %v from now", g.nextAt.Sub(late))
	}
}
