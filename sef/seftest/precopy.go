package seftest

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/reincarnation/rs/msg"
)

// PrepareBase is Prepare with a pre-copy, as rs does it when both
// instances can: the service gets a pipe with lu-prepare and streams its
// base (LUBaseStart's steps, between the work its main loop serves),
// then prepares for state and saves the delta. Saved.Base holds the
// stream, for the next instance's Init.State.
func (r *RS) PrepareBase(ctx context.Context, state int) (*Saved, error) {
	r.recvMu.Lock()
	defer r.recvMu.Unlock()
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("seftest: pipe: %w", err)
	}
	defer pr.Close()
	type result struct {
		b   []byte
		err error
	}
	base := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(pr) // to the EOF: the service closes its end
		base <- result{b, err}
	}()
	stop := context.AfterFunc(ctx, func() { pr.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	sv, err := r.prepare(ctx, state, []string{msg.BaseFD}, pw)
	if err != nil {
		return nil, err
	}
	res := <-base // the service closed its end before lu-ready
	if res.err != nil {
		sv.Close()
		return nil, fmt.Errorf("seftest: base: %w", res.err)
	}
	sv.Base = res.b
	if sv.Base == nil {
		sv.Base = []byte{}
	}
	return sv, nil
}

// sendBase hands the new instance a pipe carrying b, as rs's lu-base.
func (r *RS) sendBase(b []byte) error {
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("seftest: pipe: %w", err)
	}
	err = r.c.Send(&msg.Message{Kind: msg.KindLUBase, Names: []string{msg.BaseFD}}, pr)
	pr.Close()
	if err != nil {
		pw.Close()
		return fmt.Errorf("seftest: send lu-base: %w", err)
	}
	go func() {
		pw.Write(b) // a load that fails stops reading: the write ends
		pw.Close()
	}()
	return nil
}
