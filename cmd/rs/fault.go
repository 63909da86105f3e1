//go:build !rsfault

package main

import "github.com/reincarnation/rs/rs"

// The fault hooks exist only in test builds (-tags rsfault,
// fault_rsfault.go); here they do nothing.

func faultAdopt(bool) error { return nil }

func faultHooks(*rs.Server) {}
