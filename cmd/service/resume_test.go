package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

func stamped(t time.Time, text string) control.LogLine {
	return control.LogLine{Label: "kv", Line: t.UTC().Format("2006-01-02T15:04:05.000000Z07:00") + " out " + text}
}

// A follow asked again skips what it printed, as often as it printed
// it: two lines read in one piece share a stamp and a text.
func TestShownLinesAgain(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC)
	var s shownLines
	first := []control.LogLine{stamped(t0, "a"), stamped(t0, "ok"), stamped(t0, "ok"), stamped(t0.Add(time.Millisecond), "b")}
	for _, l := range first {
		if s.printed(l) {
			t.Fatalf("%q skipped in the first follow", l.Line)
		}
	}
	if got := s.since(); !got.Equal(t0) {
		t.Fatalf("since %v, want %v", got, t0)
	}
	s.again()
	// rs sends again from since: the four, then new ones, one of which
	// repeats a printed line's text and stamp.
	var out []string
	for _, l := range append(first, stamped(t0.Add(time.Millisecond), "b"), stamped(t0.Add(2*time.Millisecond), "c")) {
		if !s.printed(l) {
			out = append(out, l.Line[len(l.Line)-1:])
		}
	}
	if fmt.Sprint(out) != "[b c]" {
		t.Fatalf("printed after asking again: %v, want [b c]", out)
	}
}

// Only the last shownSpan of lines is kept, and at most shownMax.
func TestShownLinesBounded(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC)
	var s shownLines
	s.printed(stamped(t0, "old"))
	s.printed(stamped(t0.Add(shownSpan+time.Second), "new"))
	if got := s.since(); !got.Equal(t0.Add(shownSpan + time.Second)) {
		t.Fatalf("since %v after a line %v later", got, shownSpan+time.Second)
	}
	later := t0.Add(time.Hour)
	for i := range shownMax + 10 {
		s.printed(stamped(later, fmt.Sprint(i)))
	}
	if n := len(s.order) - s.head; n != shownMax || len(s.count) != shownMax {
		t.Fatalf("%d lines kept, %d keys, want %d", n, len(s.count), shownMax)
	}
	s.again()
	if s.printed(stamped(later, "9")) || !s.printed(stamped(later, "10")) {
		t.Fatal("the oldest lines are the ones dropped")
	}
}
