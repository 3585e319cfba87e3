//go:build !unix

package service

import "time"

// cpuTime is not known here: the process never counts as short of CPU.
func cpuTime() (time.Duration, bool) { return 0, false }
