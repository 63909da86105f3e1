package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/reincarnation/rs/rs/control"
)

// selfWait bounds how long update-self waits for the new rs to answer
// once the old one's connection ended (the exec).
const selfWait = 30 * time.Second

// updateSelf sends update-self with a token of its own. The connection
// ends with rs's exec; then the client asks the rs that answers on the
// same socket (the new one, or the old one after a rollback) what came
// of that token, until selfWait.
func updateSelf(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("update-self takes no label (%q)", c.Args().First())
	}
	bin := c.String("binary")
	if bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			return err
		}
		bin = abs
	}
	var b [8]byte
	rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	start := time.Now()
	cl := client(c)
	r, err := cl.Do(control.Request{Op: control.OpUpdateSelf, Binary: bin, Token: token}, nil)
	var ce *control.Error
	switch {
	case err == nil:
		fmt.Println(escape(r.Message))
		return nil
	case errors.As(err, &ce):
		return err // rs answered: refused, or the check failed
	}
	// The connection ended: the exec. Ask until the new rs answers.
	cl.Timeout = 5 * time.Second
	deadline := time.Now().Add(selfWait)
	delay := 5 * time.Millisecond
	for {
		r, err := cl.Do(control.Request{Op: control.OpUpdateSelfResult, Token: token}, nil)
		if err == nil {
			fmt.Printf("%s in %v\n", escape(r.Message), time.Since(start).Round(time.Millisecond))
			return nil
		}
		if errors.As(err, &ce) && ce.Code != control.CodeBusy {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("update-self: no rs answered within %v after the exec: %w", selfWait, err)
		}
		time.Sleep(delay)
		delay = min(2*delay, 100*time.Millisecond)
	}
}
