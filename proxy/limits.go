package proxy

import "golang.org/x/sys/unix"

// A proxied connection holds two descriptors, and a bulk transfer borrows
// a pipe (two more) while bytes are in flight. When the process runs out,
// everything that needs one fails at once: health checks flap, metrics go
// dark, accept spins. So the proxy sizes itself to its descriptor limit:
// a reserve stays free for the listeners, the health, metrics and admin
// endpoints' connections and the runtime; pipes are capped (beyond the cap
// a transfer is copied through a buffer, slower but whole); and the
// connection limit is what is left, two descriptors a connection.

// Limits are the bounds the proxy runs with.
type Limits struct {
	Descriptors int // the process's descriptor limit (RLIMIT_NOFILE)
	Reserve     int // kept free for everything but proxied connections
	Pipes       int // most pipes held at once
	Connections int // most connections open at once
}

func clamp(v, lo, hi int) int { return max(lo, min(v, hi)) }

// limitsFor sizes the proxy for a descriptor limit and its own connection
// setting (0 for none of its own).
func limitsFor(descriptors, maxConns int) Limits {
	l := Limits{Descriptors: descriptors}
	l.Reserve = clamp(descriptors/10, 32, 256)
	l.Pipes = clamp(descriptors/20, 8, 256)
	l.Connections = max(1, (descriptors-l.Reserve-2*l.Pipes)/2)
	if maxConns > 0 && maxConns < l.Connections {
		l.Connections = maxConns
	}
	return l
}

// descriptorLimit is the soft RLIMIT_NOFILE (Go raises it to the hard
// limit at start), or a large number when it cannot be read.
func descriptorLimit() int {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil || r.Cur > 1<<30 {
		return 1 << 30
	}
	return int(r.Cur)
}
