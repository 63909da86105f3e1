// Package hook lets sef/seftest start a sef.Service on a channel of its
// own instead of the environment's, without putting that option in
// sef's public API.
package hook

import "github.com/reincarnation/rs/msg"

// WithChannel returns a sef.Option (as any) that makes Startup use c.
// sef sets it at init.
var WithChannel func(c *msg.Conn) any
